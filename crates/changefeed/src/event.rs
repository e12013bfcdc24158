//! Events and how one change-log row becomes events for one subscription.

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::filter::Filter;

/// The JSON image of a row (or of part of it): column name to value, as
/// `row_to_json(row)` renders it.
pub type JsonRow = Map<String, Json>;

/// One event of a subscription.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A row was inserted, or changed so that it now matches the filter.
    Insert {
        /// The change's offset.
        offset: i64,
        /// The selected columns (and the key columns) of the new row.
        row: JsonRow,
    },
    /// A matching row changed and still matches.
    Update {
        /// The change's offset.
        offset: i64,
        /// The selected columns (and the key columns) of the new row.
        row: JsonRow,
        /// The selected columns whose value changed, in column order of `row`.
        changed: Vec<String>,
        /// The previous values of the changed columns.
        old: JsonRow,
    },
    /// A matching row was deleted, or changed so that it no longer matches.
    Delete {
        /// The change's offset.
        offset: i64,
        /// The primary key of the row.
        key: JsonRow,
    },
    /// A row of the initial snapshot ([`Start::Snapshot`](crate::Start::Snapshot)).
    SnapshotRow {
        /// The selected columns (and the key columns) of the row.
        row: JsonRow,
    },
    /// The end of the initial snapshot: the snapshot rows and the change
    /// events before this one, applied in order, give the table as of
    /// `offset`; live changes follow, starting right after it (resume from
    /// here with [`Start::AfterOffset`](crate::Start::AfterOffset)).
    SnapshotEnd {
        /// The offset the snapshot is consistent with.
        offset: i64,
    },
}

impl Event {
    /// The offset of a change event, or of the snapshot end; `None` for
    /// snapshot rows.
    pub fn offset(&self) -> Option<i64> {
        match self {
            Event::Insert { offset, .. }
            | Event::Update { offset, .. }
            | Event::Delete { offset, .. }
            | Event::SnapshotEnd { offset } => Some(*offset),
            Event::SnapshotRow { .. } => None,
        }
    }
}

/// One row of the change log.
#[derive(Debug, Clone)]
pub(crate) struct LogRow {
    pub(crate) pos: i64,
    pub(crate) table: String,
    pub(crate) op: Op,
    pub(crate) new: Option<JsonRow>,
    pub(crate) old: Option<JsonRow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Insert,
    Update,
    Delete,
}

/// What a subscription asked for.
#[derive(Debug)]
pub(crate) struct Spec {
    pub(crate) table: String,
    /// The table as SQL: quoted and qualified.
    pub(crate) relation: String,
    pub(crate) columns: Option<Vec<String>>,
    pub(crate) filter: Option<Filter>,
    pub(crate) key_columns: Vec<String>,
}

impl Spec {
    fn matches(&self, row: &JsonRow) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(row))
    }

    fn selected(&self, column: &str) -> bool {
        self.columns
            .as_ref()
            .is_none_or(|cs| cs.iter().any(|c| c == column))
            || self.key_columns.iter().any(|c| c == column)
    }

    /// The selected columns and the key columns of `row`.
    pub(crate) fn project(&self, row: &JsonRow) -> JsonRow {
        match &self.columns {
            None => row.clone(),
            Some(_) => row
                .iter()
                .filter(|(k, _)| self.selected(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    fn key(&self, row: &JsonRow) -> JsonRow {
        self.key_columns
            .iter()
            .map(|c| (c.clone(), row.get(c).cloned().unwrap_or(Json::Null)))
            .collect()
    }

    /// The events `change` means for this subscription (none, one, or a
    /// delete and an insert when the key changed).
    pub(crate) fn events(&self, change: &LogRow, out: &mut Vec<Event>) {
        if change.table != self.table {
            return;
        }
        let offset = change.pos;
        let old = change.old.as_ref().filter(|r| self.matches(r));
        let new = change.new.as_ref().filter(|r| self.matches(r));
        match (change.op, old, new) {
            (Op::Insert, _, Some(new)) => out.push(Event::Insert {
                offset,
                row: self.project(new),
            }),
            (Op::Delete, Some(old), _) => out.push(Event::Delete {
                offset,
                key: self.key(old),
            }),
            (Op::Update, Some(old), Some(new)) => {
                let (old_key, new_key) = (self.key(old), self.key(new));
                if old_key != new_key {
                    out.push(Event::Delete {
                        offset,
                        key: old_key,
                    });
                    out.push(Event::Insert {
                        offset,
                        row: self.project(new),
                    });
                    return;
                }
                let row = self.project(new);
                let changed: Vec<String> = row
                    .iter()
                    .filter(|(k, v)| old.get(*k).unwrap_or(&Json::Null) != *v)
                    .map(|(k, _)| k.clone())
                    .collect();
                if changed.is_empty() {
                    return;
                }
                let old = changed
                    .iter()
                    .map(|k| (k.clone(), old.get(k).cloned().unwrap_or(Json::Null)))
                    .collect();
                out.push(Event::Update {
                    offset,
                    row,
                    changed,
                    old,
                });
            }
            (Op::Update, Some(old), None) => out.push(Event::Delete {
                offset,
                key: self.key(old),
            }),
            (Op::Update, None, Some(new)) => out.push(Event::Insert {
                offset,
                row: self.project(new),
            }),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Event, JsonRow, LogRow, Op, Spec};

    fn obj(v: serde_json::Value) -> JsonRow {
        match v {
            serde_json::Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn spec(filter: &str, columns: Option<&[&str]>) -> Spec {
        Spec {
            table: "t".into(),
            relation: "\"t\"".into(),
            columns: columns.map(|cs| cs.iter().map(|c| (*c).to_owned()).collect()),
            filter: Some(filter.parse().unwrap_or_else(|e| panic!("{e}"))),
            key_columns: vec!["id".into()],
        }
    }

    fn update(old: serde_json::Value, new: serde_json::Value) -> LogRow {
        LogRow {
            pos: 7,
            table: "t".into(),
            op: Op::Update,
            new: Some(obj(new)),
            old: Some(obj(old)),
        }
    }

    #[test]
    fn updates_enter_leave_and_change() {
        let s = spec("a > 1", Some(&["b"]));
        let mut out = Vec::new();
        s.events(
            &update(
                json!({"id": 1, "a": 1, "b": 0}),
                json!({"id": 1, "a": 2, "b": 0}),
            ),
            &mut out,
        );
        assert_eq!(
            out,
            vec![Event::Insert {
                offset: 7,
                row: obj(json!({"id": 1, "b": 0}))
            }]
        );
        out.clear();
        s.events(
            &update(
                json!({"id": 1, "a": 2, "b": 0}),
                json!({"id": 1, "a": 0, "b": 0}),
            ),
            &mut out,
        );
        assert_eq!(
            out,
            vec![Event::Delete {
                offset: 7,
                key: obj(json!({"id": 1}))
            }]
        );
        out.clear();
        // Only an unselected column changed: nothing to say.
        s.events(
            &update(
                json!({"id": 1, "a": 2, "b": 0}),
                json!({"id": 1, "a": 3, "b": 0}),
            ),
            &mut out,
        );
        assert!(out.is_empty());
        s.events(
            &update(
                json!({"id": 1, "a": 2, "b": 0}),
                json!({"id": 1, "a": 3, "b": 5}),
            ),
            &mut out,
        );
        assert_eq!(
            out,
            vec![Event::Update {
                offset: 7,
                row: obj(json!({"id": 1, "b": 5})),
                changed: vec!["b".into()],
                old: obj(json!({"b": 0})),
            }]
        );
    }
}
