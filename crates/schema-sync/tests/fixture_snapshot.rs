//! The plan of the CoCalc control-plane fixture from an empty database, as a
//! reviewed snapshot. Run `cargo insta review` after an intended change.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;

use schema_sync::{Schema, snapshot, validate};

fn fixture() -> Schema {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/cocalc-control-plane-schema.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the fixture {} is missing ({e}); the shared/ directory must sit beside the repository root",
            path.display()
        )
    });
    Schema::from_json(&text).unwrap()
}

#[test]
fn fixture_loads_and_validates() {
    let s = fixture();
    assert_eq!(s.tables.len(), 174);
    assert_eq!(
        s.tables.iter().map(|t| t.columns.len()).sum::<usize>(),
        2224
    );
    assert_eq!(s.tables.iter().map(|t| t.indexes.len()).sum::<usize>(), 738);
    validate(&s).unwrap();
}

#[test]
fn fixture_plan_from_empty() {
    let s = fixture();
    insta::assert_snapshot!(snapshot::plan_between(&Schema::new(), &s));
}

#[test]
fn fixture_plan_to_itself_is_empty() {
    let s = fixture();
    assert_eq!(snapshot::plan_between(&s, &s), "-- nothing to do\n");
}

/// The pull-request pattern between two versions of a spec: every change
/// kind's rendering, with hazards and drift, stays reviewable.
#[test]
fn plan_between_two_versions() {
    use schema_sync::{Column, Index, Table};
    let old = Schema::new().table(
        Table::new("accounts")
            .column(Column::new("id", "UUID"))
            .column(Column::new("n", "INTEGER").check("n >= 0"))
            .column(Column::new("name", "VARCHAR(32)"))
            .column(Column::new("legacy", "TEXT"))
            .primary_key(["id"])
            .index(Index::new("accounts_name_idx", ["name"])),
    );
    let new = Schema::new()
        .table(
            Table::new("accounts")
                .column(Column::new("id", "UUID"))
                .column(
                    Column::new("n", "BIGINT")
                        .not_null()
                        .null_backfill("0")
                        .check("n > 0"),
                )
                .column(Column::new("name", "VARCHAR(64)").default("''").unique())
                .column(
                    Column::new("created", "TIMESTAMP")
                        .not_null()
                        .default("now()"),
                )
                .primary_key(["id"])
                .index(Index::new(
                    "accounts_name_idx",
                    ["lower(name) text_pattern_ops"],
                ))
                .index(Index::new("accounts_created_idx", ["created DESC"]).where_("n > 0")),
        )
        .table(Table::new("Odd \"Name\"").column(Column::new("select", "TEXT[]")));
    insta::assert_snapshot!(snapshot::plan_between(&old, &new));
}
