//! Events and how one change-log row becomes events for one subscription.

use serde::Serialize;
use serde_json::{Map, Value as Json};

use crate::error::EndReason;
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
    /// The table was truncated: every row is gone, whatever the filter.
    Truncate {
        /// The change's offset.
        offset: i64,
        /// The table, schema-qualified.
        table: String,
    },
    /// The table was renamed, or its columns changed. Seen at the feed's
    /// next poll after the change committed (changes committed in between
    /// may come before it). After a change of columns (`resync`) the
    /// subscription ends with [`Error::Ended`](crate::Error::Ended): row
    /// images change shape and a filter may name a column that is gone, so
    /// subscribe again from a snapshot. After a rename alone it goes on.
    SchemaChanged {
        /// The offset of the event.
        offset: i64,
        /// The table's name now, schema-qualified.
        table: String,
        /// Its name before, when it was renamed (or moved to another schema).
        renamed_from: Option<String>,
        /// Columns added.
        added: Vec<String>,
        /// Columns dropped.
        dropped: Vec<String>,
        /// Columns whose type changed.
        retyped: Vec<String>,
        /// The table was rewritten in place (`ALTER COLUMN ... TYPE ...
        /// USING`, also `VACUUM FULL` or `CLUSTER`): its rows may all have
        /// changed without a change event.
        rewritten: bool,
        /// Whether the subscriber must resync (anything but a rename
        /// changed; the subscription ends after this event).
        resync: bool,
    },
    /// The feed ended: it was disabled or its table dropped. The last event
    /// of the subscription, which then ends with
    /// [`Error::Ended`](crate::Error::Ended).
    End {
        /// The offset of the event.
        offset: i64,
        /// The table, schema-qualified.
        table: String,
        /// Why.
        reason: EndReason,
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
            | Event::SnapshotEnd { offset }
            | Event::Truncate { offset, .. }
            | Event::SchemaChanged { offset, .. }
            | Event::End { offset, .. } => Some(*offset),
            Event::SnapshotRow { .. } => None,
        }
    }

    /// Why the subscription ends after this event, if it does.
    pub(crate) fn ends(&self) -> Option<(&str, EndReason)> {
        match self {
            Event::End { table, reason, .. } => Some((table, *reason)),
            Event::SchemaChanged {
                table,
                resync: true,
                ..
            } => Some((table, EndReason::SchemaChanged)),
            _ => None,
        }
    }
}

/// One row of the change log.
#[derive(Debug, Clone)]
pub(crate) struct LogRow {
    pub(crate) pos: i64,
    /// The table's OID (`None` for changes of a table no feed knows).
    pub(crate) relid: Option<i64>,
    /// The table's schema-qualified name when the change was logged.
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
    /// `TRUNCATE`.
    Truncate,
    /// A rename or a change of columns: `new` and `old` are the table's
    /// shapes ([`shape`](crate::schema) objects).
    Schema,
    /// The feed ended: `new` holds `{"reason": ...}`.
    End,
}

impl Op {
    /// Lifecycle operations concern every subscription of the table,
    /// whatever its filter.
    pub(crate) fn is_lifecycle(self) -> bool {
        matches!(self, Op::Truncate | Op::Schema | Op::End)
    }
}

/// What a subscription asked for.
#[derive(Debug)]
pub(crate) struct Spec {
    /// The table's OID, which its changes are matched by (a rename keeps it).
    pub(crate) relid: i64,
    /// The table's quoted, schema-qualified name when subscribing: for SQL
    /// and messages.
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
        if change.relid != Some(self.relid) {
            return;
        }
        let offset = change.pos;
        if change.op.is_lifecycle() {
            out.push(lifecycle(change));
            return;
        }
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

/// The event of a lifecycle change.
fn lifecycle(change: &LogRow) -> Event {
    let (offset, table) = (change.pos, change.table.clone());
    match change.op {
        Op::Schema => {
            // name -> (type, column number)
            let columns = |shape: Option<&JsonRow>| -> Vec<(String, Json, Json)> {
                shape
                    .and_then(|s| s.get("columns"))
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|c| {
                        Some((
                            c.get(0)?.as_str()?.to_owned(),
                            c.get(1)?.clone(),
                            c.get(2).cloned().unwrap_or(Json::Null),
                        ))
                    })
                    .collect()
            };
            let field =
                |shape: Option<&JsonRow>, key: &str| shape.and_then(|s| s.get(key)).cloned();
            let (new, old) = (change.new.as_ref(), change.old.as_ref());
            let (now, before) = (columns(new), columns(old));
            let find = |cols: &[(String, Json, Json)], c: &str| {
                cols.iter()
                    .find(|(n, ..)| n == c)
                    .map(|(_, t, at)| (t.clone(), at.clone()))
            };
            // A column dropped and added again under its name has a new
            // number: it is another column.
            let added: Vec<String> = now
                .iter()
                .filter(|(c, _, at)| find(&before, c).is_none_or(|(_, was)| was != *at))
                .map(|(c, ..)| c.clone())
                .collect();
            let dropped: Vec<String> = before
                .iter()
                .filter(|(c, _, at)| find(&now, c).is_none_or(|(_, is)| is != *at))
                .map(|(c, ..)| c.clone())
                .collect();
            let retyped: Vec<String> = now
                .iter()
                .filter(|(c, t, at)| {
                    find(&before, c).is_some_and(|(was, was_at)| was_at == *at && was != *t)
                })
                .map(|(c, ..)| c.clone())
                .collect();
            let key_changed = field(new, "key") != field(old, "key");
            let rewritten = field(new, "filenode") != field(old, "filenode");
            let name = |shape: Option<&JsonRow>| {
                field(shape, "table").and_then(|t| t.as_str().map(str::to_owned))
            };
            let table = name(new).unwrap_or(table);
            let renamed_from = name(old).filter(|before| *before != table);
            let resync = !added.is_empty()
                || !dropped.is_empty()
                || !retyped.is_empty()
                || key_changed
                || rewritten;
            Event::SchemaChanged {
                offset,
                table,
                renamed_from,
                added,
                dropped,
                retyped,
                rewritten,
                resync,
            }
        }
        Op::End => {
            let dropped = change
                .new
                .as_ref()
                .and_then(|n| n.get("reason"))
                .and_then(Json::as_str)
                == Some("dropped");
            Event::End {
                offset,
                table,
                reason: if dropped {
                    EndReason::Dropped
                } else {
                    EndReason::Disabled
                },
            }
        }
        _ => Event::Truncate { offset, table },
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
            relid: 1,
            relation: "t".into(),
            columns: columns.map(|cs| cs.iter().map(|c| (*c).to_owned()).collect()),
            filter: Some(filter.parse().unwrap_or_else(|e| panic!("{e}"))),
            key_columns: vec!["id".into()],
        }
    }

    fn update(old: serde_json::Value, new: serde_json::Value) -> LogRow {
        LogRow {
            pos: 7,
            relid: Some(1),
            table: "t".into(),
            op: Op::Update,
            new: Some(obj(new)),
            old: Some(obj(old)),
        }
    }

    /// The envelope the README shows, one sample per kind.
    #[test]
    fn every_kind_serializes_to_the_documented_envelope() {
        let samples = [
            (
                Event::SnapshotRow {
                    row: obj(json!({"id": 1, "kind": "x", "offset": 2})),
                },
                r#"{"kind":"snapshot_row","row":{"id":1,"kind":"x","offset":2}}"#,
            ),
            (
                Event::SnapshotEnd { offset: 41 },
                r#"{"kind":"snapshot_end","offset":41}"#,
            ),
            (
                Event::Update {
                    offset: 43,
                    row: obj(json!({"id": 1, "email": "b"})),
                    changed: vec!["email".into()],
                    old: obj(json!({"email": "a"})),
                },
                r#"{"kind":"update","offset":43,"row":{"email":"b","id":1},"changed":["email"],"old":{"email":"a"}}"#,
            ),
            (
                Event::Delete {
                    offset: 44,
                    key: obj(json!({"id": 2})),
                },
                r#"{"kind":"delete","offset":44,"key":{"id":2}}"#,
            ),
            (
                Event::Truncate {
                    offset: 45,
                    table: "public.accounts".into(),
                },
                r#"{"kind":"truncate","offset":45,"table":"public.accounts"}"#,
            ),
            (
                Event::SchemaChanged {
                    offset: 46,
                    table: "public.users".into(),
                    renamed_from: Some("public.accounts".into()),
                    added: vec![],
                    dropped: vec![],
                    retyped: vec![],
                    rewritten: false,
                    resync: false,
                },
                r#"{"kind":"schema_changed","offset":46,"table":"public.users","renamed_from":"public.accounts","added":[],"dropped":[],"retyped":[],"rewritten":false,"resync":false}"#,
            ),
            (
                Event::End {
                    offset: 47,
                    table: "public.users".into(),
                    reason: crate::EndReason::Disabled,
                },
                r#"{"kind":"end","offset":47,"table":"public.users","reason":"disabled"}"#,
            ),
        ];
        for (event, text) in samples {
            assert_eq!(serde_json::to_string(&event).ok().as_deref(), Some(text));
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
