//! Sharding: which live replica owns (polls, activates, scales) each object, decided
//! purely from the members' Leases and the time.
//!
//! Every replica keeps a Lease of its own, renewed like a leader's. A member counts for
//! ownership once it has *settled* and until it is *gone*; objects are assigned to
//! the settled members by rendezvous hashing (highest score of `hash(member, object)`), so
//! a member joining or leaving moves only the objects it gains or had.
//!
//! Why two replicas never act on one object: a replica acts only while it has listed the
//! Leases within the last two thirds of the Lease duration (as the leader elector steps
//! down); a joining member settles only after that long, so by then every replica still
//! acting has seen it and computes the same owners. A member that is alone when it joins
//! (no other live Lease after its own was written) settles at once: anybody acting would
//! hold a live Lease. A member that dies stops acting two thirds of a duration after its
//! last renewal; the others take its share once a list of the Leases, *started* after that
//! instant (and the skew margin), still shows that renewal: any later renewal would have
//! been listed, and a round that succeeds only after the member's own deadline has passed
//! makes it join again (settling anew) instead of acting. Time alone never makes another
//! member gone: the others act only on a list fresh enough, and without one they have
//! stopped acting too. Clock skew is covered by a margin: another member counts as settled
//! (or gone) a margin early, this one a margin late.

use std::fmt::Write as _;

/// One replica, as its Lease describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The replica's identity (its Pod name, or host and PID).
    pub identity: String,
    /// Where the replica answers forwarded metric reads (`host:port`), when it says.
    pub address: Option<String>,
    /// When it counts for ownership (Unix milliseconds); `i64::MAX` while it is joining.
    pub settled_at_ms: i64,
    /// When its Lease expires without renewal (Unix milliseconds).
    pub expires_at_ms: i64,
    /// The latest it acts without renewing again (Unix milliseconds): two thirds of the
    /// duration after its last renewal.
    pub acts_until_ms: i64,
}

/// The members one replica sees, and how they share the objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// This replica's identity.
    pub me: String,
    /// The settled, unexpired members (this one included once it has settled), sorted.
    pub owners: Vec<Member>,
    /// Members seen but not settled yet.
    pub joining: Vec<String>,
}

/// The margin for clock skew between replicas, in milliseconds.
pub const SKEW_MARGIN_MS: i64 = 1_000;

/// How long after joining a member settles, for a Lease of `duration_ms`: two thirds of
/// it (the longest a replica acts without having listed the Leases) and the skew margin.
pub fn settle_delay_ms(duration_ms: i64) -> i64 {
    duration_ms * 2 / 3 + SKEW_MARGIN_MS
}

/// The part of a Lease's duration a member acts for after a renewal, in milliseconds.
pub fn acting_ms(duration_ms: i64) -> i64 {
    duration_ms * 2 / 3
}

/// Whether another member is gone, from a list of the Leases started at `listed_at_ms`
/// that showed `m` as it is: the list began after `m` stopped acting (a margin late), so
/// it would have shown any later renewal. Time alone never makes another member gone: a
/// replica acts only on a list fresh enough, and `m` may have renewed since an older one.
pub fn gone(m: &Member, listed_at_ms: i64) -> bool {
    m.acts_until_ms.saturating_add(SKEW_MARGIN_MS) <= listed_at_ms
}

/// When to list the Leases again to find a member gone as early as [`gone`] allows: the
/// earliest instant another member listed at `listed_at_ms` stops acting (a margin late),
/// unless it renews first. `None` when no other member will stop.
pub fn recheck_at(me: &str, members: &[Member], listed_at_ms: i64) -> Option<i64> {
    members
        .iter()
        .filter(|m| m.identity != me && !gone(m, listed_at_ms))
        .map(|m| m.acts_until_ms.saturating_add(SKEW_MARGIN_MS))
        .filter(|at| *at < i64::MAX)
        .min()
}

/// The view of `members`, as listed by a list started at `listed_at_ms`, from `me` at
/// `now_ms`.
pub fn view(me: &str, members: &[Member], listed_at_ms: i64, now_ms: i64) -> View {
    let mut owners = Vec::new();
    let mut joining = Vec::new();
    for m in members {
        let ours = m.identity == me;
        // Another member counts a margin early and goes a margin late; this one the reverse
        // (its own acting is bounded by its deadline, not by its Lease).
        let settle_margin = if ours {
            SKEW_MARGIN_MS
        } else {
            -SKEW_MARGIN_MS
        };
        let away = if ours {
            m.expires_at_ms <= now_ms
        } else {
            gone(m, listed_at_ms)
        };
        if away {
            continue;
        }
        if m.settled_at_ms.saturating_add(settle_margin) <= now_ms {
            owners.push(m.clone());
        } else {
            joining.push(m.identity.clone());
        }
    }
    owners.sort_by(|a, b| a.identity.cmp(&b.identity));
    owners.dedup_by(|a, b| a.identity == b.identity);
    joining.sort();
    View {
        me: me.to_string(),
        owners,
        joining,
    }
}

impl View {
    /// A view in which this replica owns everything (one replica, no Leases).
    pub fn alone(me: &str) -> Self {
        View {
            me: me.to_string(),
            owners: vec![Member {
                identity: me.to_string(),
                address: None,
                settled_at_ms: i64::MIN,
                expires_at_ms: i64::MAX,
                acts_until_ms: i64::MAX,
            }],
            joining: Vec::new(),
        }
    }

    /// The owner of the object `key`, when any member is settled.
    pub fn owner(&self, key: &str) -> Option<&Member> {
        self.owner_of(&[key])
    }

    /// The owner of the key made of `parts` joined by `/`, without making it.
    fn owner_of(&self, parts: &[&str]) -> Option<&Member> {
        self.owners
            .iter()
            .max_by_key(|m| (score_parts(&m.identity, parts), m.identity.as_str()))
    }

    /// Whether this replica owns `key`.
    pub fn owns(&self, key: &str) -> bool {
        self.owner(key).is_some_and(|m| m.identity == self.me)
    }

    /// Whether this replica owns the object `kind/namespace/name` (as [`View::owns`] of
    /// its [`key`], without making the key).
    pub fn owns_object(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.owner_of(&[kind, namespace, name])
            .is_some_and(|m| m.identity == self.me)
    }

    /// Whether this replica counts for ownership.
    pub fn settled(&self) -> bool {
        self.owners.iter().any(|m| m.identity == self.me)
    }

    /// The settled members' identities, for logs.
    pub fn identities(&self) -> Vec<&str> {
        self.owners.iter().map(|m| m.identity.as_str()).collect()
    }
}

/// The key of an object for ownership: its kind, namespace and name.
pub fn key(kind: &str, namespace: &str, name: &str) -> String {
    let mut k = String::with_capacity(kind.len() + namespace.len() + name.len() + 2);
    let _ = write!(k, "{kind}/{namespace}/{name}");
    k
}

/// The key of what a trigger of an object in `namespace` asks its source, for placing
/// its polls: triggers with the same key ask the same question, so one replica polls them
/// all and the source sees one query per interval whatever the number of replicas. Made
/// of the spec alone (never of resolved secrets), so every replica computes the same key;
/// the namespace counts only where the answer may depend on it (an authentication
/// reference, a `...FromEnv` parameter).
pub fn query_key(namespace: &str, trigger: &crate::scaled_object::ScaleTriggers) -> String {
    let mut k = String::with_capacity(64);
    k.push_str("query/");
    k.push_str(&trigger.type_);
    let local = trigger.authentication_ref.is_some()
        || trigger.metadata.keys().any(|p| p.ends_with("FromEnv"));
    if local {
        let _ = write!(k, "/{namespace}");
    }
    if let Some(a) = &trigger.authentication_ref {
        let _ = write!(
            k,
            "/auth={}:{}",
            a.kind.as_deref().unwrap_or("TriggerAuthentication"),
            a.name
        );
    }
    // BTreeMap: the parameters in one order on every replica.
    for (p, v) in &trigger.metadata {
        let _ = write!(k, "\n{p}={v}");
    }
    k
}

/// Rendezvous score of `member` for `key`: 64-bit FNV-1a over both, finished with
/// SplitMix64's mixer so close inputs spread. Stable across builds and platforms (every
/// replica, whatever its version, must agree).
pub fn score(member: &str, key: &str) -> u64 {
    score_parts(member, &[key])
}

/// [`score`] of the key made of `parts` joined by `/`, without making it: the scale loop
/// asks it of every object at every wake.
pub fn score_parts(member: &str, parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    eat(member.as_bytes());
    eat(&[0xff]);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            eat(b"/");
        }
        eat(part.as_bytes());
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, settled: i64, expires: i64) -> Member {
        Member {
            identity: id.into(),
            address: None,
            settled_at_ms: settled,
            expires_at_ms: expires,
            acts_until_ms: expires,
        }
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| key("ScaledObject", "ns", &format!("so-{i}")))
            .collect()
    }

    #[test]
    fn the_score_is_stable() {
        // Fixed values: a change of the hash would split a mixed-version cluster's views.
        assert_eq!(
            score("a", "ScaledObject/ns/x"),
            score("a", "ScaledObject/ns/x")
        );
        assert_ne!(score("a", "k"), score("b", "k"));
        assert_ne!(score("ab", "c"), score("a", "bc"), "the separator counts");
        assert_eq!(score("", ""), 134_870_256_705_401_553);
    }

    #[test]
    fn settled_members_share_and_others_wait() {
        let members = [m("a", 0, 10_000), m("b", 0, 10_000), m("c", 9_000, 20_000)];
        let v = view("a", &members, 0, 5_000);
        assert_eq!(v.identities(), ["a", "b"]);
        assert_eq!(v.joining, ["c"]);
        assert!(v.settled());
        // Another member counts a margin early, this one a margin late.
        let v = view("a", &members, 0, 8_000);
        assert_eq!(v.identities(), ["a", "b", "c"]);
        let v = view("c", &members, 0, 8_000);
        assert_eq!(v.identities(), ["a", "b"], "c waits its own margin");
        assert!(!v.settled());
        let v = view("c", &members, 0, 9_500);
        assert!(!v.settled());
        let v = view("c", &members, 0, 10_000);
        assert!(v.settled());
        // Its own expiry ends a member's share at once; another's deadline counts a margin
        // late, and only for a list begun after it.
        assert_eq!(view("b", &members, 0, 10_000).identities(), ["a", "c"]);
        assert_eq!(view("a", &members, 10_000, 10_000).identities(), ["b", "c"]);
        assert_eq!(view("a", &members, 10_999, 11_000).identities(), ["b", "c"]);
        assert_eq!(view("a", &members, 11_000, 11_000).identities(), ["c"]);
    }

    #[test]
    fn every_key_has_one_owner_and_all_views_agree() {
        let members = [
            m("a", 0, i64::MAX),
            m("b", 0, i64::MAX),
            m("c", 0, i64::MAX),
        ];
        let views: Vec<View> = ["a", "b", "c"]
            .iter()
            .map(|me| view(me, &members, 0, 10_000))
            .collect();
        let mut counts = [0usize; 3];
        for k in keys(3_000) {
            let owners: Vec<usize> = (0..3).filter(|i| views[*i].owns(&k)).collect();
            assert_eq!(owners.len(), 1, "{k} owned by {owners:?}");
            counts[owners[0]] += 1;
        }
        for c in counts {
            assert!((850..=1_150).contains(&c), "an even share: {counts:?}");
        }
    }

    #[test]
    fn a_join_moves_only_what_the_newcomer_gains() {
        let two = [m("a", 0, i64::MAX), m("b", 0, i64::MAX)];
        let three = [
            m("a", 0, i64::MAX),
            m("b", 0, i64::MAX),
            m("c", 0, i64::MAX),
        ];
        let (before, after) = (view("x", &two, 0, 10_000), view("x", &three, 0, 10_000));
        let mut moved = 0;
        for k in keys(3_000) {
            let (was, is) = (before.owner(&k).unwrap(), after.owner(&k).unwrap());
            if was.identity != is.identity {
                assert_eq!(is.identity, "c", "{k} moved between old members");
                moved += 1;
            }
        }
        assert!(
            (850..=1_150).contains(&moved),
            "about a third moved: {moved}"
        );
    }

    /// During a join, with views taken at any instant by any member (each within its own
    /// clock skew), no key is owned by two members at once.
    #[test]
    fn no_two_members_own_a_key_at_the_same_time() {
        let duration = 15_000;
        let join = 100_000;
        let settle = join + settle_delay_ms(duration);
        let members = [
            m("a", 0, i64::MAX),
            m("b", 0, i64::MAX),
            m("c", settle, i64::MAX),
        ];
        let ks = keys(500);
        for now in (join..settle + 5_000).step_by(100) {
            // Clocks up to the margin apart.
            for skew in [-SKEW_MARGIN_MS + 1, 0, SKEW_MARGIN_MS - 1] {
                let views = [
                    view("a", &members, 0, now),
                    view("b", &members, 0, now + skew),
                    view("c", &members, 0, now - skew),
                ];
                for k in &ks {
                    let n = views.iter().filter(|v| v.owns(k)).count();
                    assert!(n <= 1, "{k} owned {n} times at {now} (skew {skew})");
                }
            }
        }
        // After the margin every key has its owner again.
        let views = [
            view("a", &members, 0, settle + SKEW_MARGIN_MS),
            view("b", &members, 0, settle + SKEW_MARGIN_MS),
            view("c", &members, 0, settle + SKEW_MARGIN_MS),
        ];
        for k in &ks {
            assert_eq!(views.iter().filter(|v| v.owns(k)).count(), 1);
        }
    }

    #[test]
    fn a_list_begun_after_a_members_deadline_finds_it_gone() {
        let b = Member {
            acts_until_ms: 10_000,
            ..m("b", 0, 15_000)
        };
        let members = [m("a", 0, i64::MAX), b];
        // Listed before b's deadline (and the margin): b stays, however late it is, as b
        // may have renewed since.
        assert_eq!(view("a", &members, 10_999, 14_000).identities(), ["a", "b"]);
        assert_eq!(view("a", &members, 10_999, 99_000).identities(), ["a", "b"]);
        // A list begun after it that still shows the same renewal: gone at once.
        assert_eq!(view("a", &members, 11_000, 11_000).identities(), ["a"]);
        // When to look again for that, and nothing to look for once it is gone.
        assert_eq!(recheck_at("a", &members, 5_000), Some(11_000));
        assert_eq!(recheck_at("a", &members, 11_000), None);
        assert_eq!(recheck_at("b", &members, 5_000), None, "a never stops");
    }

    /// A small deterministic generator for the timeline below.
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: i64) -> i64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) % n.max(1) as u64) as i64
        }
    }

    /// Member `a` renews each third of the duration and acts until two thirds after each
    /// round's start; it is killed at a random instant, and some of its rounds stall (one
    /// that succeeds after its deadline joins again instead of acting). Member `b` lists at
    /// its own pace, looking again when [`recheck_at`] says. Clocks up to a margin apart,
    /// with random latencies. Millisecond by millisecond: `b` never takes `a`'s share while
    /// `a` acts, and takes it within two thirds of the duration and the margin (plus the
    /// skew and the list's time) of the kill.
    #[test]
    fn a_member_is_never_taken_over_while_it_acts_and_a_dead_one_goes_in_time() {
        for duration in [3_000, 6_000, 15_000] {
            let (every, deadline) = (duration / 3, acting_ms(duration));
            for seed in 0..150u64 {
                let mut r = Lcg(seed * 7_919 + duration as u64);
                // Stalls in half the runs; the other half check the time to take over.
                let stalls = seed % 2 == 0;
                let half = SKEW_MARGIN_MS / 2 - 1;
                let (skew_a, skew_b) = (r.below(2 * half) - half, r.below(2 * half) - half);
                let end = 8 * duration;
                let killed = duration + r.below(4 * duration);
                // a's renewals as (written at, real ms; stamp, a's clock) and its acting.
                let mut writes: Vec<(i64, i64)> = Vec::new();
                let mut acting: Vec<(i64, i64)> = Vec::new();
                let (mut start, mut until) = (-every, 0i64);
                while start < end {
                    // The first round (its join, long settled) before anyone looks.
                    let stall = if stalls && start >= 0 && r.below(6) == 0 {
                        r.below(duration)
                    } else {
                        0
                    };
                    let written = start + r.below(150) + stall;
                    if written >= killed {
                        break;
                    }
                    writes.push((written, start + skew_a));
                    let ok = written + r.below(150);
                    if ok >= until && start >= 0 {
                        break; // lapsed: joins again (settling anew), not modelled further
                    }
                    until = start + deadline;
                    acting.push((ok, until.min(killed)));
                    start = (start + every).max(ok);
                }
                let a_acts = |t: i64| acting.iter().any(|(from, to)| (*from..*to).contains(&t));
                let listed = |read: i64| {
                    writes
                        .iter()
                        .rev()
                        .find(|(w, _)| *w <= read)
                        .map(|(_, stamp)| Member {
                            acts_until_ms: stamp + deadline,
                            ..m("a", 0, stamp + duration)
                        })
                };
                // b's rounds: (done at, acting until, listed at on b's clock, a as listed).
                let mut b_start = r.below(every);
                let mut rounds = Vec::new();
                while b_start < end {
                    let stall = if stalls && r.below(8) == 0 {
                        r.below(duration)
                    } else {
                        0
                    };
                    let list_at = b_start + r.below(100);
                    let read = list_at + r.below(100) + stall;
                    let done = read + r.below(100);
                    let a = listed(read);
                    let mut next = b_start + every;
                    if let Some(a) = &a {
                        let members = [a.clone()];
                        if let Some(at) = recheck_at("b", &members, list_at + skew_b) {
                            next = next.min(at - skew_b);
                        }
                    }
                    rounds.push((done, b_start + deadline, list_at + skew_b, a));
                    b_start = next.max(done + 50);
                }
                let mut taken = None;
                for t in 0..end {
                    let Some((_, b_until, listed_at, a)) =
                        rounds.iter().rev().find(|(done, ..)| *done <= t)
                    else {
                        continue;
                    };
                    if t >= *b_until {
                        continue; // b is not acting
                    }
                    let without_a = a.as_ref().is_none_or(|a| gone(a, *listed_at));
                    if without_a {
                        assert!(
                            !a_acts(t),
                            "b took a's share while a acted at {t} (D {duration}, seed {seed}): a {acting:?} {writes:?}, b {:?}", rounds.iter().map(|r| (r.0, r.1, r.2, r.3.as_ref().map(|a| a.acts_until_ms))).collect::<Vec<_>>()
                        );
                        if t >= killed && taken.is_none() {
                            taken = Some(t);
                        }
                    }
                }
                if !stalls {
                    assert_eq!(
                        acting.last().map(|(_, to)| *to),
                        Some(killed),
                        "a acted to the end"
                    );
                    let took = taken.expect("taken over") - killed;
                    let bound = deadline + SKEW_MARGIN_MS + (skew_a - skew_b) + 300;
                    assert!(
                        took <= bound,
                        "took {took} > {bound} (D {duration}, seed {seed})"
                    );
                }
            }
        }
    }

    #[test]
    fn query_keys_name_the_question() {
        let t = |meta: &[(&str, &str)], auth: Option<&str>| crate::scaled_object::ScaleTriggers {
            type_: "prometheus".into(),
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            authentication_ref: auth.map(|a| crate::scaled_object::AuthenticationRef {
                name: a.into(),
                kind: None,
            }),
            ..Default::default()
        };
        let q = [("serverAddress", "http://p"), ("query", "up")];
        // The same question from two namespaces: one key.
        assert_eq!(query_key("a", &t(&q, None)), query_key("b", &t(&q, None)));
        // With an authentication reference (a namespace's Secret), one per namespace.
        assert_ne!(
            query_key("a", &t(&q, Some("x"))),
            query_key("b", &t(&q, Some("x")))
        );
        assert_ne!(
            query_key("a", &t(&q, None)),
            query_key(
                "a",
                &t(&[("serverAddress", "http://p"), ("query", "down")], None)
            )
        );
        let env = [("serverAddressFromEnv", "URL"), ("query", "up")];
        assert_ne!(
            query_key("a", &t(&env, None)),
            query_key("b", &t(&env, None))
        );
    }

    #[test]
    fn alone_owns_everything() {
        let v = View::alone("me");
        assert!(keys(10).iter().all(|k| v.owns(k)));
        assert!(View::default().owner("k").is_none());
    }

    #[test]
    fn an_object_is_scored_as_its_key() {
        for (kind, ns, name) in [("ScaledObject", "ns", "so"), ("k", "", "n/x"), ("", "", "")] {
            for member in ["a", "eventscale-7d9f-x", ""] {
                assert_eq!(
                    score_parts(member, &[kind, ns, name]),
                    score(member, &key(kind, ns, name))
                );
            }
        }
        let members = vec![
            m("a", 0, i64::MAX),
            m("b", 0, i64::MAX),
            m("c", 0, i64::MAX),
        ];
        for me in ["a", "b", "c"] {
            let v = view(me, &members, 0, 10_000);
            for i in 0..200 {
                let name = format!("so-{i}");
                assert_eq!(
                    v.owns_object("ScaledObject", "ns", &name),
                    v.owns(&key("ScaledObject", "ns", &name))
                );
            }
        }
    }
}
