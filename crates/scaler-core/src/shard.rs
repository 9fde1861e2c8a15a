//! Sharding: which live replica owns (polls, activates, scales) each object, decided
//! purely from the members' Leases and the time.
//!
//! Every replica keeps a Lease of its own, renewed like a leader's. A member counts for
//! ownership once it has *settled* and until its Lease *expires*; objects are assigned to
//! the settled members by rendezvous hashing (highest score of `hash(member, object)`), so
//! a member joining or leaving moves only the objects it gains or had.
//!
//! Why two replicas never act on one object: a replica acts only while it has listed the
//! Leases within the last two thirds of the Lease duration (as the leader elector steps
//! down); a joining member settles only after that long, so by then every replica still
//! acting has seen it and computes the same owners. A member that is alone when it joins
//! (no other live Lease after its own was written) settles at once: anybody acting would
//! hold a live Lease. A member that dies stops acting before its Lease expires, and the
//! others take its share only after the expiry. Clock skew is covered by a margin: another
//! member counts as settled (or gone) a margin early, this one a margin late.

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

/// The view of `members` from `me` at `now_ms`.
pub fn view(me: &str, members: &[Member], now_ms: i64) -> View {
    let mut owners = Vec::new();
    let mut joining = Vec::new();
    for m in members {
        let ours = m.identity == me;
        // Another member counts a margin early and goes a margin late; this one the reverse.
        let (settle_margin, expiry_margin) = if ours {
            (SKEW_MARGIN_MS, 0)
        } else {
            (-SKEW_MARGIN_MS, SKEW_MARGIN_MS)
        };
        if m.expires_at_ms.saturating_add(expiry_margin) <= now_ms {
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
        let v = view("a", &members, 5_000);
        assert_eq!(v.identities(), ["a", "b"]);
        assert_eq!(v.joining, ["c"]);
        assert!(v.settled());
        // Another member counts a margin early, this one a margin late.
        let v = view("a", &members, 8_000);
        assert_eq!(v.identities(), ["a", "b", "c"]);
        let v = view("c", &members, 8_000);
        assert_eq!(v.identities(), ["a", "b"], "c waits its own margin");
        assert!(!v.settled());
        let v = view("c", &members, 9_500);
        assert!(!v.settled());
        let v = view("c", &members, 10_000);
        assert!(v.settled());
        // Its own expiry ends a member's share at once; another's counts a margin late.
        assert_eq!(view("b", &members, 10_000).identities(), ["a", "c"]);
        assert_eq!(view("a", &members, 10_000).identities(), ["b", "c"]);
        assert_eq!(view("a", &members, 11_000).identities(), ["c"]);
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
            .map(|me| view(me, &members, 10_000))
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
        let (before, after) = (view("x", &two, 10_000), view("x", &three, 10_000));
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
                    view("a", &members, now),
                    view("b", &members, now + skew),
                    view("c", &members, now - skew),
                ];
                for k in &ks {
                    let n = views.iter().filter(|v| v.owns(k)).count();
                    assert!(n <= 1, "{k} owned {n} times at {now} (skew {skew})");
                }
            }
        }
        // After the margin every key has its owner again.
        let views = [
            view("a", &members, settle + SKEW_MARGIN_MS),
            view("b", &members, settle + SKEW_MARGIN_MS),
            view("c", &members, settle + SKEW_MARGIN_MS),
        ];
        for k in &ks {
            assert_eq!(views.iter().filter(|v| v.owns(k)).count(), 1);
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
            let v = view(me, &members, 10_000);
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
