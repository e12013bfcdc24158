//! Programs `#[derive(FromRow)]` must refuse, run as doc tests. The messages
//! and spans are checked by the unit tests of `expand`; these check that
//! each mistake stops the build. The first example is their control: the
//! same setup, without the mistake, compiles.
//!
//! ```
//! #[derive(db::FromRow)]
//! #[db(rename_all = "camelCase")]
//! struct Account {
//!     #[db(rename = "id", default)]
//!     id: i64,
//!     #[db(try_from = "i64")]
//!     quota: u32,
//!     #[db(flatten)]
//!     inner: Inner,
//!     #[db(json(nullable))]
//!     settings: Option<serde_json::Value>,
//! }
//! #[derive(db::FromRow)]
//! struct Inner(i64);
//! ```
//!
//! An unknown field attribute:
//!
//! ```compile_fail
//! #[derive(db::FromRow)]
//! struct Account {
//!     #[db(renamed = "id")]
//!     id: i64,
//! }
//! ```
//!
//! An unknown `rename_all` rule:
//!
//! ```compile_fail
//! #[derive(db::FromRow)]
//! #[db(rename_all = "camel_case")]
//! struct Account {
//!     id: i64,
//! }
//! ```
//!
//! A field attribute on the struct:
//!
//! ```compile_fail
//! #[derive(db::FromRow)]
//! #[db(rename = "accounts")]
//! struct Account {
//!     id: i64,
//! }
//! ```
//!
//! `flatten` with `rename`:
//!
//! ```compile_fail
//! #[derive(db::FromRow)]
//! struct Account {
//!     #[db(flatten, rename = "x")]
//!     inner: Inner,
//! }
//! #[derive(db::FromRow)]
//! struct Inner(i64);
//! ```
//!
//! `try_from` of a type the field does not convert from:
//!
//! ```compile_fail
//! #[derive(db::FromRow)]
//! struct Account {
//!     #[db(try_from = "String")]
//!     quota: u32,
//! }
//! ```
//!
//! A field of a type no column converts to:
//!
//! ```compile_fail
//! struct NotAColumn;
//! #[derive(db::FromRow)]
//! struct Account {
//!     id: NotAColumn,
//! }
//! ```
//!
//! An enum:
//!
//! ```compile_fail
//! #[derive(db::FromRow)]
//! enum State {
//!     Open,
//!     Closed,
//! }
//! ```
//!
//! `json(nullable)` on a field that is not an `Option`:
//!
//! ```compile_fail
//! #[derive(db::FromRow)]
//! struct Account {
//!     #[db(json(nullable))]
//!     settings: serde_json::Value,
//! }
//! ```
