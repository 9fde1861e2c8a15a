// The walkthrough's load: a constant arrival rate of GET requests through the interceptor,
// with the walkthrough's Host header. Set by the environment:
//   TARGET    the interceptor's proxy URL (EVENTSCALE_INTERCEPTOR_PROXY)
//   HOST      the Host header (default helloworld.jourdain.io)
//   RATE      requests per second (default 100)
//   DURATION  how long (default 30s)
//   DELAY_MS  how long the demo application takes to answer each request (default 0), so
//             that RATE × DELAY_MS / 1000 requests are in flight
// The summary (failed requests, latency percentiles) goes where --summary-export says.
import http from 'k6/http';
import { check } from 'k6';

const rate = parseInt(__ENV.RATE || '100', 10);

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
  scenarios: {
    constant_request_rate: {
      executor: 'constant-arrival-rate',
      rate: rate,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      // Requests held while the app starts from zero each keep a VU busy: enough of them
      // that k6 keeps the arrival rate through a cold start of up to ten seconds (a pod
      // started beside sixty other tests on a 2-core machine), allocated before the run
      // (k6 starting VUs in the middle of a cold start lags and drops arrivals that
      // eventscale never saw). As many as the 1,000 req/s run preallocates.
      preAllocatedVUs: Math.max(1000, rate),
      maxVUs: Math.max(1000, rate * 4),
    },
  },
};

const url = `${__ENV.TARGET}/?delay_ms=${__ENV.DELAY_MS || '0'}`;
const params = { headers: { Host: __ENV.HOST || 'helloworld.jourdain.io' }, timeout: '60s' };

export default function () {
  const r = http.get(url, params);
  check(r, { 'status is 200': (res) => res.status === 200 });
}
