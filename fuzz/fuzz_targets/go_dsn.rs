//! MySQL connection strings (Go's DSN form and `mysql://` URLs): never a panic; an accepted
//! Go-form DSN with a dialable address has its user, password, address and database,
//! formatted as KEDA formats the separate mysql parameters, parse back to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scaler_core::go_dsn::{self, Dsn};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = go_dsn::parse_options(s);
    let Ok(dsn) = go_dsn::parse(s) else {
        return;
    };
    let dialable = dsn.host_port().is_ok();
    let _ = dsn.options.query_timeout();
    // Go's formatter drops a password without a user, and escapes neither (a URL's
    // decoded user may hold the ':' that ends it in Go's form); an address Go's dialer
    // cannot split is bracketed again each time, by Go's driver too.
    if dsn.user.is_empty() || s.starts_with("mysql://") || !dialable {
        return;
    }
    let formatted = go_dsn::format(&dsn.user, &dsn.password, &dsn.addr, &dsn.db_name);
    match go_dsn::parse(&formatted) {
        Ok(again) => assert_eq!(
            again,
            Dsn::new(&dsn.user, &dsn.password, &dsn.addr, &dsn.db_name),
            "{s:?} formatted as {formatted:?}"
        ),
        Err(e) => panic!("{s:?} formatted as {formatted:?} was refused: {e}"),
    }
});
