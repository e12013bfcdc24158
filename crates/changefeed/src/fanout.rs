//! The poller's routing of changes to subscriptions: a change is offered
//! only to the subscriptions it can concern, found through an index of
//! their equality (and `IN`) filters, so that a thousand subscriptions
//! filtered by owner cost about what one does.

use std::collections::HashMap;

use serde_json::Value as Json;

use crate::event::{LogRow, Spec};
use crate::filter::Filter;

/// A JSON value as an index key, equal exactly when [`Filter`]'s equality
/// says so (numbers compare numerically: `1` and `1.0` are one key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Str(String),
    Int(i64),
    Float(u64),
    Bool(bool),
}

/// The largest magnitude below which every `f64` integer is exact.
const EXACT: f64 = 9_007_199_254_740_992.0;

fn key(v: &Json) -> Option<Key> {
    match v {
        Json::String(s) => Some(Key::Str(s.clone())),
        Json::Bool(b) => Some(Key::Bool(*b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Some(Key::Int(i)),
            None => {
                let f = n.as_f64()?;
                if f.fract() == 0.0 && f.abs() < EXACT {
                    // An integral value written as a float (numeric columns
                    // keep their scale: 1.0) equals the integer.
                    Some(Key::Int(f as i64))
                } else if f.is_nan() {
                    None
                } else {
                    Some(Key::Float(f.to_bits()))
                }
            }
        },
        Json::Null | Json::Array(_) | Json::Object(_) => None,
    }
}

/// The column and values a filter requires one of (from an `=` or `IN`
/// condition, alone or within `AND`), when every value can be a key.
fn required(filter: &Filter) -> Option<(&str, Vec<Key>)> {
    match filter {
        Filter::Eq(c, v) => Some((c, vec![key(v)?])),
        Filter::In(c, vs) => Some((c, vs.iter().map(key).collect::<Option<_>>()?)),
        Filter::And(fs) => fs.iter().find_map(required),
        _ => None,
    }
}

/// The subscriptions requiring each value of one column.
type ValueIndex = HashMap<Key, Vec<usize>>;

/// The subscriptions (by index) each change is to be offered to.
#[derive(Debug, Default)]
pub(crate) struct Router {
    /// Per table (OID), the subscriptions that see all of its changes.
    all: HashMap<i64, Vec<usize>>,
    /// Per table (OID) and column, the subscriptions requiring each value.
    by_value: HashMap<i64, Vec<(String, ValueIndex)>>,
}

impl Router {
    pub(crate) fn new<'a>(specs: impl IntoIterator<Item = &'a Spec>) -> Router {
        let mut router = Router::default();
        for (i, spec) in specs.into_iter().enumerate() {
            match spec.filter.as_ref().and_then(required) {
                None => router.all.entry(spec.relid).or_default().push(i),
                Some((column, keys)) => {
                    let columns = router.by_value.entry(spec.relid).or_default();
                    let index = match columns.iter().position(|(c, _)| c == column) {
                        Some(at) => &mut columns[at].1,
                        None => {
                            columns.push((column.to_owned(), HashMap::new()));
                            let last = columns.len() - 1;
                            &mut columns[last].1
                        }
                    };
                    for k in keys {
                        index.entry(k).or_default().push(i);
                    }
                }
            }
        }
        router
    }

    /// Fills `out` with the subscriptions `change` can concern, each once,
    /// in increasing order: those with no required value, and those whose
    /// required value the new or the old image has; every subscription of
    /// the table for a lifecycle change (truncate, schema change, end).
    pub(crate) fn route(&self, change: &LogRow, out: &mut Vec<usize>) {
        out.clear();
        let Some(relid) = change.relid else {
            return;
        };
        if let Some(all) = self.all.get(&relid) {
            out.extend_from_slice(all);
        }
        for (column, index) in self.by_value.get(&relid).into_iter().flatten() {
            if change.op.is_lifecycle() {
                out.extend(index.values().flatten());
                continue;
            }
            for image in [&change.new, &change.old].into_iter().flatten() {
                if let Some(subs) = image.get(column).and_then(key).and_then(|k| index.get(&k)) {
                    out.extend_from_slice(subs);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Router;
    use crate::event::{JsonRow, LogRow, Op, Spec};

    fn spec(table: &str, filter: Option<&str>) -> Spec {
        Spec {
            relid: if table == "t" { 1 } else { 2 },
            relation: table.into(),
            columns: None,
            filter: filter.map(|f| f.parse().unwrap_or_else(|e| panic!("{e}"))),
            key_columns: vec!["id".into()],
        }
    }

    fn image(v: serde_json::Value) -> Option<JsonRow> {
        v.as_object().cloned()
    }

    fn route(
        router: &Router,
        op: Op,
        new: serde_json::Value,
        old: serde_json::Value,
    ) -> Vec<usize> {
        let change = LogRow {
            pos: 1,
            relid: Some(1),
            table: "t".into(),
            op,
            new: image(new),
            old: image(old),
        };
        let mut out = Vec::new();
        router.route(&change, &mut out);
        out
    }

    #[test]
    fn changes_reach_the_subscriptions_whose_value_they_have() {
        let specs = [
            spec("t", Some("owner = 'ada'")),
            spec("t", Some("owner IN ('bob', 'ada') AND n > 1")),
            spec("t", Some("n = 1")),
            spec("t", Some("n > 1")),
            spec("u", None),
            spec("t", None),
        ];
        let router = Router::new(&specs);
        let null = serde_json::Value::Null;
        assert_eq!(
            route(
                &router,
                Op::Insert,
                json!({"owner": "ada", "n": 2}),
                null.clone()
            ),
            vec![0, 1, 3, 5]
        );
        // Numbers compare numerically: a numeric column's 1.0 is 1.
        assert_eq!(
            route(
                &router,
                Op::Insert,
                json!({"owner": "eve", "n": 1.0}),
                null.clone()
            ),
            vec![2, 3, 5]
        );
        // An update is offered by its old image too (the row may leave).
        assert_eq!(
            route(
                &router,
                Op::Update,
                json!({"owner": "eve", "n": 5}),
                json!({"owner": "bob", "n": 5})
            ),
            vec![1, 3, 5]
        );
        assert_eq!(
            route(&router, Op::Delete, null.clone(), json!({"owner": null})),
            vec![3, 5]
        );
        // A truncation concerns every subscription of the table.
        assert_eq!(
            route(&router, Op::Truncate, null.clone(), null),
            vec![0, 1, 2, 3, 5]
        );
    }
}
