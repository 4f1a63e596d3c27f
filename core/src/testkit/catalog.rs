//! Catalog conformance (see `crate::catalog`): every state store with a
//! [`Catalog`] runs it with a factory of its catalog.

use std::sync::Arc;

use serde_json::json;

use super::Factory;
use crate::catalog::{Catalog, SchemaPut, StoredSchema};

/// Runs every catalog case.
pub async fn run_all(factory: &dyn Factory<dyn Catalog>) {
    an_empty_catalog_is_at_generation_zero(factory).await;
    a_schema_version_is_stored_once(factory).await;
    concurrent_puts_of_one_version_have_one_winner(factory).await;
    schemas_are_listed_by_name_then_version(factory).await;
}

fn schema(name: &str, version: &str, value: serde_json::Value) -> StoredSchema {
    StoredSchema {
        name: name.into(),
        version: version.into(),
        schema: value,
        stored_at: 1_700_000_000_000,
    }
}

/// A new catalog has nothing, at generation 0.
pub async fn an_empty_catalog_is_at_generation_zero(factory: &dyn Factory<dyn Catalog>) {
    let catalog = factory.make().await;
    assert_eq!(catalog.generation().await.expect("generation"), 0);
    assert!(catalog.list_schemas().await.expect("list").is_empty());
    assert!(!catalog.delete_schema("a", "1").await.expect("delete"));
    assert_eq!(catalog.generation().await.expect("generation"), 0);
}

/// Created once; the same schema again (keys in another order) changes nothing; another one
/// conflicts unless replacing; deleting removes it. The generation moves with every change
/// and only then.
pub async fn a_schema_version_is_stored_once(factory: &dyn Factory<dyn Catalog>) {
    let catalog = factory.make().await;
    let first = schema(
        "user/signed.up",
        "1",
        json!({"type": "object", "required": ["data"], "properties": {"data": {"type": "object"}}}),
    );
    assert_eq!(
        catalog.put_schema(&first, false).await.expect("put"),
        SchemaPut::Created
    );
    let g1 = catalog.generation().await.expect("generation");
    assert!(g1 > 0, "a change moves the generation");
    assert_eq!(
        catalog.list_schemas().await.expect("list"),
        std::slice::from_ref(&first)
    );

    let reordered: serde_json::Value = serde_json::from_str(
        r#"{"properties": {"data": {"type": "object"}}, "required": ["data"], "type": "object"}"#,
    )
    .expect("JSON");
    let mut same = schema("user/signed.up", "1", reordered);
    same.stored_at += 5;
    for replace in [false, true] {
        assert_eq!(
            catalog.put_schema(&same, replace).await.expect("put"),
            SchemaPut::Unchanged,
            "the same schema, keys in another order (replace: {replace})"
        );
    }
    assert_eq!(catalog.generation().await.expect("generation"), g1);
    assert_eq!(
        catalog.list_schemas().await.expect("list")[0].stored_at,
        first.stored_at,
        "an unchanged put keeps the first time"
    );

    let other = schema("user/signed.up", "1", json!({"type": "object"}));
    assert_eq!(
        catalog.put_schema(&other, false).await.expect("put"),
        SchemaPut::Conflict
    );
    assert_eq!(catalog.generation().await.expect("generation"), g1);
    assert_eq!(
        catalog.list_schemas().await.expect("list"),
        std::slice::from_ref(&first),
        "a conflict changes nothing"
    );
    assert_eq!(
        catalog.put_schema(&other, true).await.expect("put"),
        SchemaPut::Replaced
    );
    let g2 = catalog.generation().await.expect("generation");
    assert!(g2 > g1);
    assert_eq!(catalog.list_schemas().await.expect("list"), [other]);

    assert!(
        catalog
            .delete_schema("user/signed.up", "1")
            .await
            .expect("delete")
    );
    let g3 = catalog.generation().await.expect("generation");
    assert!(g3 > g2);
    assert!(catalog.list_schemas().await.expect("list").is_empty());
    assert!(
        !catalog
            .delete_schema("user/signed.up", "1")
            .await
            .expect("delete")
    );
    assert_eq!(catalog.generation().await.expect("generation"), g3);
}

/// Eight puts of different schemas under one version, at once: one is created, the others
/// conflict, and the stored schema is the winner's.
pub async fn concurrent_puts_of_one_version_have_one_winner(factory: &dyn Factory<dyn Catalog>) {
    let catalog = factory.make().await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let catalog: Arc<dyn Catalog> = catalog.clone();
            tokio::spawn(async move {
                let s = schema("race", "1", json!({"maxProperties": i}));
                (i, catalog.put_schema(&s, false).await.expect("put"))
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (i, outcome) = task.await.expect("task");
        match outcome {
            SchemaPut::Created => winners.push(i),
            SchemaPut::Conflict => {}
            other => panic!("put {i}: {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let stored = catalog.list_schemas().await.expect("list");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].schema, json!({"maxProperties": winners[0]}));
}

/// Listed by name, then version label; names and versions that share characters stay apart.
pub async fn schemas_are_listed_by_name_then_version(factory: &dyn Factory<dyn Catalog>) {
    let catalog = factory.make().await;
    let pairs = [
        ("b", "1"),
        ("a1", "2"),
        ("a", "12"),
        ("a", "2"),
        ("é/ü", "x:y"),
    ];
    for (i, (name, version)) in pairs.iter().enumerate() {
        let s = schema(name, version, json!({"minProperties": i}));
        assert_eq!(
            catalog.put_schema(&s, false).await.expect("put"),
            SchemaPut::Created,
            "{name} {version}"
        );
    }
    let listed: Vec<(String, String)> = catalog
        .list_schemas()
        .await
        .expect("list")
        .into_iter()
        .map(|s| (s.name, s.version))
        .collect();
    let expected: Vec<(String, String)> = [
        ("a", "12"),
        ("a", "2"),
        ("a1", "2"),
        ("b", "1"),
        ("é/ü", "x:y"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    assert_eq!(listed, expected);
}
