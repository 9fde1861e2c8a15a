//! Trigger parameters, read as KEDA's typed config reads them
//! (`pkg/scalers/scalersconfig/typed_config.go`).
//!
//! Every parameter a scaler takes is declared once, as a constant [`Param`]: its name (and
//! aliases), the sources it may come from in order, whether it is required or has a
//! default, the values it allows. One reader, [`Params`], looks parameters up and converts
//! them, with KEDA's words for every error:
//!
//! ```
//! use scaler_core::scalers::params::{Defaulted, Param, Required, Source::*};
//!
//! const THRESHOLD: Param<Required> = Param::new("threshold").required();
//! const CA: Param = Param::new("ca").from(&[Auth]);
//! const TLS: Param<Defaulted> = Param::new("tls")
//!     .from(&[Meta, Auth])
//!     .default("disable")
//!     .one_of(&["enable", "disable"]);
//! ```
//!
//! As in KEDA, values are trimmed and an empty value counts as absent; the first source in
//! order that has a value wins, and within a source the first name.
//!
//! `<name>FromEnv` is resolved into metadata `<name>` before a scaler is built
//! ([`super::with_env`]), so a metadata `<name>` beside a `<name>FromEnv` is the
//! environment's: it is read where the declaration lists [`Source::Env`], not where it lists
//! [`Source::Meta`]. Beyond KEDA, whose scalers read the environment only where their
//! `order` names `resolvedEnv`, [`Param::new`] declares a parameter that may come from
//! either.

mod values;

/// KEDA's `int64` syntax, for a scaler that reads a variant of it.
pub(in crate::scalers) use values::int64;

use std::fmt;
use std::marker::PhantomData;

use super::{AuthParams, ScalerError};
use crate::trigger_metadata::TriggerMetadata;

/// Where a parameter may come from (a source in KEDA's `order=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The trigger's `metadata` (KEDA's `triggerMetadata`).
    Meta,
    /// The parameters of the trigger's `authenticationRef` (`authParams`).
    Auth,
    /// The scale target's container environment, named by `<name>FromEnv` (`resolvedEnv`).
    Env,
}

impl Source {
    /// KEDA's name for the source, as its errors print it.
    pub fn keda_name(self) -> &'static str {
        match self {
            Source::Meta => "triggerMetadata",
            Source::Auth => "authParams",
            Source::Env => "resolvedEnv",
        }
    }
}

/// A parameter's sources in order, printed as KEDA prints them: `[triggerMetadata authParams]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order(pub &'static [Source]);

impl fmt::Display for Order {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s.keda_name())?;
        }
        f.write_str("]")
    }
}

/// A parameter that may be absent: its getters give `Option<T>`.
#[derive(Debug, Clone, Copy)]
pub struct Optional;

/// A parameter that must be given: its getters give `T`, absent is an error.
#[derive(Debug, Clone, Copy)]
pub struct Required;

/// A parameter with a default: its getters give `T`, the default's when absent.
#[derive(Debug, Clone, Copy)]
pub struct Defaulted;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Optional {}
    impl Sealed for super::Required {}
    impl Sealed for super::Defaulted {}
}

/// Whether a parameter may be absent, and so what its getters give.
pub trait Presence: sealed::Sealed + Copy {
    /// What a getter of a `T` gives.
    type Out<T>;

    /// `value` as a getter gives it; `missing` when it must be there and is not.
    fn finish<T>(
        value: Option<T>,
        missing: impl FnOnce() -> ScalerError,
    ) -> Result<Self::Out<T>, ScalerError>;
}

impl Presence for Optional {
    type Out<T> = Option<T>;

    fn finish<T>(
        value: Option<T>,
        _: impl FnOnce() -> ScalerError,
    ) -> Result<Option<T>, ScalerError> {
        Ok(value)
    }
}

impl Presence for Required {
    type Out<T> = T;

    fn finish<T>(
        value: Option<T>,
        missing: impl FnOnce() -> ScalerError,
    ) -> Result<T, ScalerError> {
        value.ok_or_else(missing)
    }
}

impl Presence for Defaulted {
    type Out<T> = T;

    fn finish<T>(
        value: Option<T>,
        missing: impl FnOnce() -> ScalerError,
    ) -> Result<T, ScalerError> {
        // The default stands in for an absent value before this, so this never misses.
        value.ok_or_else(missing)
    }
}

/// What [`Param::new`] reads: the trigger's metadata, or the environment through
/// `<name>FromEnv`.
const METADATA_OR_ENV: &[Source] = &[Source::Meta, Source::Env];

/// One parameter's declaration (KEDA's `keda:"..."` field tag), built as a constant.
#[derive(Debug, Clone, Copy)]
pub struct Param<P = Optional> {
    name: &'static str,
    aliases: &'static [&'static str],
    from: &'static [Source],
    default: Option<&'static str>,
    one_of: &'static [&'static str],
    exclusive: &'static [&'static str],
    secret: bool,
    presence: PhantomData<P>,
}

impl Param<Optional> {
    /// An optional parameter `name`, read from the trigger's metadata or, through
    /// `<name>FromEnv`, the scale target's environment; [`Param::from`] says otherwise.
    pub const fn new(name: &'static str) -> Self {
        Param {
            name,
            aliases: &[],
            from: METADATA_OR_ENV,
            default: None,
            one_of: &[],
            exclusive: &[],
            secret: false,
            presence: PhantomData,
        }
    }

    /// Absent is an error (KEDA's parameters without `optional` or `default`).
    pub const fn required(self) -> Param<Required> {
        Param {
            name: self.name,
            aliases: self.aliases,
            from: self.from,
            default: None,
            one_of: self.one_of,
            exclusive: self.exclusive,
            secret: self.secret,
            presence: PhantomData,
        }
    }

    /// Absent reads as `value` (KEDA's `default=`).
    pub const fn default(self, value: &'static str) -> Param<Defaulted> {
        Param {
            name: self.name,
            aliases: self.aliases,
            from: self.from,
            default: Some(value),
            one_of: self.one_of,
            exclusive: self.exclusive,
            secret: self.secret,
            presence: PhantomData,
        }
    }
}

impl<P: Presence> Param<P> {
    /// Read from these sources, in this order (KEDA's `order=`).
    pub const fn from(mut self, sources: &'static [Source]) -> Self {
        self.from = sources;
        self
    }

    /// Other names, looked up after the first in each source (KEDA's `name=a;b`).
    pub const fn aliases(mut self, names: &'static [&'static str]) -> Self {
        self.aliases = names;
        self
    }

    /// The only values allowed; a list's every element must be one (KEDA's `enum=`).
    pub const fn one_of(mut self, values: &'static [&'static str]) -> Self {
        self.one_of = values;
        self
    }

    /// Values of which a list may hold at most one (KEDA's `exclusiveSet=`).
    pub const fn exclusive(mut self, values: &'static [&'static str]) -> Self {
        self.exclusive = values;
        self
    }

    /// A secret, from sources other than plain metadata: a value written in plain metadata
    /// is an error, not ignored as KEDA ignores it.
    pub const fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// The parameter's (first) name, which errors name as the field at fault.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Every name, the first first.
    fn names(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.name).chain(self.aliases.iter().copied())
    }

    /// KEDA's name for the parameter in errors: its names joined by `,`.
    fn keda_name(&self) -> String {
        self.names().collect::<Vec<_>>().join(",")
    }

    /// KEDA's error for a required parameter no source has.
    fn missing(&self) -> ScalerError {
        ScalerError::MissingParameter {
            param: self.name.to_string(),
            names: self.keda_name(),
            from: Order(self.from),
        }
    }

    /// KEDA's error for a value it cannot convert, `detail` being Go's words.
    fn unable_to_set(&self, value: &str, detail: impl fmt::Display) -> ScalerError {
        ScalerError::invalid(
            self.name,
            format!(
                "unable to set param {:?} value {value:?}: {detail}",
                self.keda_name()
            ),
        )
    }

    /// KEDA's `enum` and `exclusiveSet` checks of `value`, whose elements are `items`.
    fn check_allowed(&self, value: &str, items: &[&str]) -> Result<(), ScalerError> {
        if !self.one_of.is_empty() && items.iter().any(|i| !self.one_of.contains(i)) {
            return Err(ScalerError::invalid(
                self.name,
                format!(
                    "parameter {:?} value {value:?} must be one of [{}]",
                    self.keda_name(),
                    self.one_of.join(" ")
                ),
            ));
        }
        if items.iter().filter(|i| self.exclusive.contains(i)).count() > 1 {
            return Err(ScalerError::invalid(
                self.name,
                format!(
                    "parameter {:?} value {value:?} must contain only one of [{}]",
                    self.keda_name(),
                    self.exclusive.join(" ")
                ),
            ));
        }
        Ok(())
    }
}

/// The reader of one trigger's parameters: its metadata (with `<name>FromEnv` resolved)
/// and its authentication parameters.
#[derive(Clone, Copy)]
pub struct Params<'a> {
    metadata: &'a TriggerMetadata,
    auth: &'a AuthParams,
    /// The trigger's index, for logs.
    index: usize,
}

impl std::fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Authentication parameters are secrets: only their names are printed.
        f.debug_struct("Params")
            .field("metadata", &self.metadata.keys().collect::<Vec<_>>())
            .field("auth", &self.auth.keys().collect::<Vec<_>>())
            .field("index", &self.index)
            .finish()
    }
}

/// The trimmed value of `key` in `map`; empty counts as absent.
fn present(value: Option<&str>) -> Option<&str> {
    value.map(|v| v.trim()).filter(|v| !v.is_empty())
}

impl<'a> Params<'a> {
    /// The reader of trigger `index`'s `metadata` and `auth`.
    pub fn new(metadata: &'a TriggerMetadata, auth: &'a AuthParams, index: usize) -> Self {
        Params {
            metadata,
            auth,
            index,
        }
    }

    /// A string, as given (trimmed).
    pub fn text<P: Presence>(&self, p: &Param<P>) -> Result<P::Out<&'a str>, ScalerError> {
        self.parse(p, Ok)
    }

    /// A Go `float64` (a JSON number).
    pub fn float<P: Presence>(&self, p: &Param<P>) -> Result<P::Out<f64>, ScalerError> {
        self.parse(p, values::float64)
    }

    /// A Go `int64` (a JSON integer).
    pub fn int<P: Presence>(&self, p: &Param<P>) -> Result<P::Out<i64>, ScalerError> {
        self.parse(p, values::int64)
    }

    /// A Go `bool` (`strconv.ParseBool`).
    pub fn flag<P: Presence>(&self, p: &Param<P>) -> Result<P::Out<bool>, ScalerError> {
        self.parse(p, values::boolean)
    }

    /// A Go `time.Duration` in nanoseconds: a Go duration or whole milliseconds. As in Go,
    /// milliseconds past `i64` nanoseconds wrap (negative).
    pub fn duration<P: Presence>(&self, p: &Param<P>) -> Result<P::Out<i64>, ScalerError> {
        self.parse(p, values::duration)
    }

    /// A `k1=v1,k2=v2` map, in the order of first appearance.
    pub fn pairs<P: Presence>(
        &self,
        p: &Param<P>,
    ) -> Result<P::Out<Vec<(String, String)>>, ScalerError> {
        self.parse(p, values::pairs)
    }

    /// A comma-separated list, each element trimmed and checked against
    /// [`Param::one_of`] and [`Param::exclusive`].
    pub fn list<P: Presence>(&self, p: &Param<P>) -> Result<P::Out<Vec<&'a str>>, ScalerError> {
        let items = match self.raw(p)? {
            None => None,
            Some(v) => {
                let items: Vec<&str> = v.split(',').map(str::trim).collect();
                p.check_allowed(v, &items)?;
                Some(items)
            }
        };
        P::finish(items, || p.missing())
    }

    /// A value in a syntax of the scaler's own: `parse` gives it, or the reason it cannot,
    /// which comes out in KEDA's `unable to set param` sentence.
    pub fn parse<P: Presence, T>(
        &self,
        p: &Param<P>,
        parse: impl FnOnce(&'a str) -> Result<T, String>,
    ) -> Result<P::Out<T>, ScalerError> {
        let value = match self.raw(p)? {
            None => None,
            Some(v) => {
                p.check_allowed(v, &[v])?;
                Some(parse(v).map_err(|detail| p.unable_to_set(v, detail))?)
            }
        };
        P::finish(value, || p.missing())
    }

    /// KEDA's lookup (`configParamValue`): the first non-empty value, source by source and
    /// name by name; else the default.
    fn raw<P: Presence>(&self, p: &Param<P>) -> Result<Option<&'a str>, ScalerError> {
        let found = p
            .from
            .iter()
            .find_map(|&source| p.names().find_map(|name| self.at(source, name)));
        for name in p.names() {
            let from_env = self.names_env(name);
            if from_env && !p.from.contains(&Source::Env) {
                tracing::warn!(
                    trigger = self.index,
                    "{name}FromEnv is not read: {name} comes from {} only",
                    Order(p.from)
                );
            }
            if found.is_none()
                && p.secret
                && !from_env
                && present(self.metadata.get(name)).is_some()
            {
                return Err(ScalerError::invalid(
                    p.name,
                    format!("{name} must come from a TriggerAuthentication or {name}FromEnv, not from plain metadata"),
                ));
            }
        }
        Ok(found.or(p.default))
    }

    /// Whether the metadata names an environment variable for `name` (`<name>FromEnv`).
    fn names_env(&self, name: &str) -> bool {
        self.metadata.contains_key(&format!("{name}FromEnv"))
    }

    /// The value of `name` in `source`.
    fn at(&self, source: Source, name: &str) -> Option<&'a str> {
        match source {
            Source::Meta if !self.names_env(name) => present(self.metadata.get(name)),
            Source::Env if self.names_env(name) => present(self.metadata.get(name)),
            Source::Auth => present(self.auth.get(name).map(String::as_str)),
            Source::Meta | Source::Env => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Source::{Auth, Env, Meta};
    use super::*;

    fn map<M: FromIterator<(String, String)>>(pairs: &[(&str, &str)]) -> M {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `read` over a reader of `meta` and `auth`.
    fn with<T>(
        meta: &[(&str, &str)],
        auth: &[(&str, &str)],
        read: impl FnOnce(Params<'_>) -> T,
    ) -> T {
        let (meta, auth) = (map(meta), map(auth));
        read(Params::new(&meta, &auth, 0))
    }

    /// Where a value is looked for, and what counts as absent: (declaration's sources,
    /// metadata, authentication, the value read).
    #[test]
    fn sources_in_order() {
        type Pairs = &'static [(&'static str, &'static str)];
        const P: &str = "p";
        let cases: &[(&[Source], Pairs, Pairs, Option<&str>)] = &[
            (&[Meta, Env], &[(P, "m")], &[(P, "a")], Some("m")),
            (&[Meta, Env], &[], &[(P, "a")], None),
            (&[Meta, Auth], &[(P, "m")], &[(P, "a")], Some("m")),
            (&[Auth, Meta], &[(P, "m")], &[(P, "a")], Some("a")),
            (&[Meta, Auth], &[], &[(P, "a")], Some("a")),
            // Values are trimmed; empty, or only blanks, is absent.
            (&[Meta, Auth], &[(P, " m\n")], &[], Some("m")),
            (&[Meta, Auth], &[(P, "")], &[(P, "a")], Some("a")),
            (&[Meta, Auth], &[(P, " \t")], &[(P, " ")], None),
            // A metadata value beside `<name>FromEnv` is the environment's.
            (
                &[Meta, Env],
                &[(P, "e"), ("pFromEnv", "VAR")],
                &[],
                Some("e"),
            ),
            (
                &[Meta, Auth, Env],
                &[(P, "e"), ("pFromEnv", "VAR")],
                &[(P, "a")],
                Some("a"),
            ),
            (
                &[Meta, Env, Auth],
                &[(P, "e"), ("pFromEnv", "VAR")],
                &[(P, "a")],
                Some("e"),
            ),
            (&[Meta, Auth], &[(P, "e"), ("pFromEnv", "VAR")], &[], None),
            (
                &[Auth, Env],
                &[(P, "e"), ("pFromEnv", "VAR")],
                &[],
                Some("e"),
            ),
            // The variable was missing: nothing from the environment.
            (&[Meta, Env], &[("pFromEnv", "VAR")], &[], None),
            (&[Auth], &[(P, "m")], &[], None),
        ];
        for &(from, meta, auth, want) in cases {
            let p = Param::new(P).from(from);
            let got = with(meta, auth, |r| r.text(&p).map(|v| v.map(str::to_string)));
            assert_eq!(
                got.expect("reads").as_deref(),
                want,
                "{from:?} {meta:?} {auth:?}"
            );
        }
    }

    #[test]
    fn names_source_by_source() {
        let p = Param::new("authModes")
            .aliases(&["authMode"])
            .from(&[Meta, Auth]);
        let read = |meta: &[(&str, &str)], auth: &[(&str, &str)]| {
            with(meta, auth, |r| {
                r.text(&p).expect("reads").map(str::to_string)
            })
        };
        assert_eq!(
            read(&[("authMode", "m")], &[("authModes", "a")]).as_deref(),
            Some("m")
        );
        assert_eq!(
            read(&[("authMode", "m2"), ("authModes", "m1")], &[]).as_deref(),
            Some("m1")
        );
        assert_eq!(read(&[], &[("authMode", "a")]).as_deref(), Some("a"));
    }

    /// Required, optional and defaulted parameters, and the getters' types.
    #[test]
    fn presence_and_defaults() {
        const REQUIRED: Param<Required> = Param::new("threshold").required();
        const OPTIONAL: Param = Param::new("threshold");
        const DEFAULTED: Param<Defaulted> = Param::new("threshold").default("10");
        let given = [("threshold", "2.5")];
        let absent = [("threshold", "  ")];
        with(&given, &[], |r| {
            let v: f64 = r.float(&REQUIRED).expect("given");
            assert_eq!(v, 2.5);
            assert_eq!(r.float(&OPTIONAL), Ok(Some(2.5)));
            assert_eq!(r.float(&DEFAULTED), Ok(2.5));
        });
        with(&absent, &[], |r| {
            assert_eq!(r.float(&OPTIONAL), Ok(None));
            assert_eq!(r.float(&DEFAULTED), Ok(10.0));
            let e = r.float(&REQUIRED).expect_err("missing");
            assert_eq!(e.param(), Some("threshold"));
            assert_eq!(
                e.to_string(),
                "missing required parameter \"threshold\" in [triggerMetadata resolvedEnv]"
            );
        });
        // A default is checked as a given value is (KEDA's enum check runs on it too).
        const BAD_DEFAULT: Param<Defaulted> = Param::new("mode").default("x").one_of(&["a"]);
        assert!(with(&[], &[], |r| r.text(&BAD_DEFAULT).map(drop)).is_err());
    }

    /// Every error in KEDA's words, naming the parameter at fault.
    #[test]
    fn errors_in_kedas_words() {
        let cases: Vec<(Result<(), ScalerError>, &str, &str)> = vec![
            (
                with(&[], &[], |r| {
                    r.text(&Param::new("serverAddress").from(&[Meta]).required())
                        .map(drop)
                }),
                "serverAddress",
                "missing required parameter \"serverAddress\" in [triggerMetadata]",
            ),
            (
                with(&[], &[], |r| {
                    r.text(
                        &Param::new("bearerToken")
                            .aliases(&["token"])
                            .from(&[Auth, Env])
                            .required(),
                    )
                    .map(drop)
                }),
                "bearerToken",
                "missing required parameter \"bearerToken,token\" in [authParams resolvedEnv]",
            ),
            (
                with(&[("n", "x1")], &[], |r| r.int(&Param::new("n")).map(drop)),
                "n",
                "unable to set param \"n\" value \"x1\": unable to unmarshal to field type int64: invalid character 'x' looking for beginning of value",
            ),
            (
                with(&[("f", "1e400")], &[], |r| r.float(&Param::new("f")).map(drop)),
                "f",
                "unable to set param \"f\" value \"1e400\": unable to unmarshal to field type float64: json: cannot unmarshal number 1e400 into Go value of type float64",
            ),
            (
                with(&[("b", "yes")], &[], |r| r.flag(&Param::new("b")).map(drop)),
                "b",
                "unable to set param \"b\" value \"yes\": unable to parse boolean value \"yes\": strconv.ParseBool: parsing \"yes\": invalid syntax",
            ),
            (
                with(&[("t", "-1")], &[], |r| r.duration(&Param::new("t")).map(drop)),
                "t",
                "unable to set param \"t\" value \"-1\": duration cannot be negative: -1 milliseconds",
            ),
            (
                with(&[("h", "a=1,b")], &[], |r| r.pairs(&Param::new("h")).map(drop)),
                "h",
                "unable to set param \"h\" value \"a=1,b\": expected format key=value, got \"b\"",
            ),
            (
                with(&[("m", "c")], &[], |r| {
                    r.text(&Param::new("m").one_of(&["a", "b"])).map(drop)
                }),
                "m",
                "parameter \"m\" value \"c\" must be one of [a b]",
            ),
            (
                with(&[("m", "a, c")], &[], |r| {
                    r.list(&Param::new("m").one_of(&["a", "b", "c"]).exclusive(&["a", "c"]))
                        .map(drop)
                }),
                "m",
                "parameter \"m\" value \"a, c\" must contain only one of [a c]",
            ),
            (
                with(&[("m", "a,")], &[], |r| {
                    r.list(&Param::new("m").one_of(&["a"])).map(drop)
                }),
                "m",
                "parameter \"m\" value \"a,\" must be one of [a]",
            ),
            (
                with(&[("x", "1")], &[], |r| {
                    r.parse(&Param::new("x"), |_| Err::<(), _>("no good".to_string()))
                        .map(drop)
                }),
                "x",
                "unable to set param \"x\" value \"1\": no good",
            ),
            (
                with(&[("password", "s3cret")], &[], |r| {
                    r.text(&Param::new("password").from(&[Auth, Env]).secret())
                        .map(drop)
                }),
                "password",
                "password must come from a TriggerAuthentication or passwordFromEnv, not from plain metadata",
            ),
        ];
        for (got, param, want) in cases {
            let e = got.expect_err(want);
            assert_eq!(e.param(), Some(param), "{e}");
            assert_eq!(e.to_string(), want);
        }
        // A secret from authentication or the environment is read, plain metadata beside it
        // or not.
        let secret = Param::new("password").from(&[Auth, Env]).secret();
        for (meta, auth) in [
            (vec![("password", "plain")], vec![("password", "a")]),
            (vec![("password", "e"), ("passwordFromEnv", "V")], vec![]),
        ] {
            assert_eq!(
                with(&meta, &auth, |r| r.text(&secret).map(|v| v.is_some())),
                Ok(true)
            );
        }
    }

    #[test]
    fn values() {
        with(
            &[
                ("list", " a , b,c "),
                ("pairs", " a = 1 , b=2, a=3 "),
                ("ms", "1500"),
                ("go", "1m30s"),
                ("flag", "T"),
            ],
            &[],
            |r| {
                assert_eq!(r.list(&Param::new("list")), Ok(Some(vec!["a", "b", "c"])));
                assert_eq!(
                    r.pairs(&Param::new("pairs")),
                    Ok(Some(vec![
                        ("a".to_string(), "3".to_string()),
                        ("b".to_string(), "2".to_string())
                    ]))
                );
                assert_eq!(r.duration(&Param::new("ms")), Ok(Some(1_500_000_000)));
                assert_eq!(r.duration(&Param::new("go")), Ok(Some(90_000_000_000)));
                assert_eq!(r.flag(&Param::new("flag")), Ok(Some(true)));
            },
        );
    }
}
