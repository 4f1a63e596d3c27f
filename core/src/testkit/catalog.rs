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
    function_versions_are_numbered_once_per_content(factory).await;
    concurrent_versions_get_numbers_without_gaps(factory).await;
    routing_changes_are_compare_and_set(factory).await;
    run_counts_add_up_per_version(factory).await;
}

/// Counts reported by several nodes add up per function and version, and leave the
/// generation alone.
pub async fn run_counts_add_up_per_version(factory: &dyn Factory<dyn Catalog>) {
    use crate::catalog::RunCount;
    let catalog = factory.make().await;
    let count = |f: &str, v: &str, runs: u64, failed: u64| RunCount {
        function_id: f.into(),
        version: v.into(),
        runs,
        failed,
    };
    assert!(
        catalog
            .run_counts("greet")
            .await
            .expect("counts")
            .is_empty()
    );
    catalog
        .add_run_counts(&[count("greet", "aaaa", 3, 1), count("greet", "bbbb", 2, 0)])
        .await
        .expect("add");
    catalog
        .add_run_counts(&[count("greet", "aaaa", 4, 2), count("other", "aaaa", 1, 1)])
        .await
        .expect("add");
    catalog.add_run_counts(&[]).await.expect("nothing to add");
    assert_eq!(
        catalog.run_counts("greet").await.expect("counts"),
        [count("greet", "aaaa", 7, 3), count("greet", "bbbb", 2, 0)]
    );
    assert_eq!(
        catalog.run_counts("other").await.expect("counts"),
        [count("other", "aaaa", 1, 1)]
    );
    assert_eq!(catalog.generation().await.expect("generation"), 0);
}

fn function_version(function_id: &str, hash: &str) -> crate::catalog::FunctionVersion {
    crate::catalog::FunctionVersion {
        function_id: function_id.into(),
        number: 0,
        version: hash.into(),
        stored_at: 1_700_000_000_000,
        source: "conformance".into(),
    }
}

/// Versions are numbered 1, 2, … per function in the order stored; storing a content hash
/// again answers its version unchanged (not new, the generation unmoved); each bundle is
/// found by its hash.
pub async fn function_versions_are_numbered_once_per_content(factory: &dyn Factory<dyn Catalog>) {
    let catalog = factory.make().await;
    let bundle = |text: &str| bytes::Bytes::from(text.to_owned());
    let (v1, new) = catalog
        .put_function_version(&function_version("greet", "aaaa"), bundle("one"))
        .await
        .expect("put");
    assert!(new);
    assert_eq!((v1.number, v1.version.as_str()), (1, "aaaa"));
    let (v2, _) = catalog
        .put_function_version(&function_version("greet", "bbbb"), bundle("two"))
        .await
        .expect("put");
    assert_eq!(v2.number, 2);
    let (other, _) = catalog
        .put_function_version(&function_version("greet-2", "aaaa"), bundle("x"))
        .await
        .expect("put");
    assert_eq!(other.number, 1, "numbered per function");
    let generation = catalog.generation().await.expect("generation");
    let mut again = function_version("greet", "aaaa");
    again.source = "another node".into();
    let (same, new) = catalog
        .put_function_version(&again, bundle("ignored"))
        .await
        .expect("put");
    assert!(!new);
    assert_eq!(same, v1, "the first record is kept");
    assert_eq!(catalog.generation().await.expect("generation"), generation);
    assert_eq!(
        catalog.function_versions("greet").await.expect("list"),
        [v1.clone(), v2]
    );
    assert_eq!(
        catalog.function_bundle("greet", "aaaa").await.expect("get"),
        Some(bundle("one"))
    );
    assert_eq!(
        catalog
            .function_bundle("greet-2", "aaaa")
            .await
            .expect("get"),
        Some(bundle("x"))
    );
    assert_eq!(
        catalog.function_bundle("greet", "cccc").await.expect("get"),
        None
    );
    assert!(
        catalog
            .function_versions("none")
            .await
            .expect("list")
            .is_empty()
    );
}

/// Eight nodes storing eight new versions of one function at once get the numbers 1 to 8,
/// each once; eight storing the same content get one number.
pub async fn concurrent_versions_get_numbers_without_gaps(factory: &dyn Factory<dyn Catalog>) {
    let catalog = factory.make().await;
    let put_all = |hashes: Vec<String>| {
        let tasks: Vec<_> = hashes
            .into_iter()
            .map(|hash| {
                let catalog: Arc<dyn Catalog> = catalog.clone();
                tokio::spawn(async move {
                    catalog
                        .put_function_version(&function_version("race", &hash), bytes::Bytes::new())
                        .await
                        .expect("put")
                })
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for task in tasks {
                out.push(task.await.expect("task"));
            }
            out
        }
    };
    let stored = put_all((0..8).map(|i| format!("hash-{i}")).collect()).await;
    let mut numbers: Vec<u64> = stored.iter().map(|(v, _)| v.number).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<u64>>());
    let same = put_all(vec!["same".to_owned(); 8]).await;
    assert_eq!(same.iter().filter(|(_, new)| *new).count(), 1);
    assert!(same.iter().all(|(v, _)| v.number == 9), "{same:?}");
}

/// A routing is set only when its revision is the one expected (0 before the first), names
/// stored versions only, and is listed with its revision; each change moves the generation.
pub async fn routing_changes_are_compare_and_set(factory: &dyn Factory<dyn Catalog>) {
    use crate::catalog::{Canary, Routing};
    let catalog = factory.make().await;
    for hash in ["h1", "h2"] {
        catalog
            .put_function_version(&function_version("greet", hash), bytes::Bytes::new())
            .await
            .expect("put");
    }
    let live = |number: u64| Routing {
        live: number,
        canary: None,
        previous: Vec::new(),
        note: "test".into(),
        changed_at: 5,
    };
    assert!(catalog.routings().await.expect("list").is_empty());
    assert!(
        catalog.set_routing("greet", &live(3), 0).await.is_err(),
        "version 3 is not stored"
    );
    let generation = catalog.generation().await.expect("generation");
    assert_eq!(
        catalog
            .set_routing("greet", &live(1), 0)
            .await
            .expect("set"),
        Some(1)
    );
    assert!(catalog.generation().await.expect("generation") > generation);
    assert_eq!(
        catalog
            .set_routing("greet", &live(2), 0)
            .await
            .expect("set"),
        None,
        "another change came first"
    );
    let canary = Routing {
        canary: Some(Canary {
            number: 2,
            percent: 10,
            sticky_user: true,
            baseline: Default::default(),
        }),
        previous: vec![1],
        ..live(1)
    };
    assert_eq!(
        catalog.set_routing("greet", &canary, 1).await.expect("set"),
        Some(2)
    );
    let bad_canary = Routing {
        canary: Some(Canary {
            number: 7,
            percent: 10,
            sticky_user: false,
            baseline: Default::default(),
        }),
        ..live(1)
    };
    assert!(catalog.set_routing("greet", &bad_canary, 2).await.is_err());
    let too_much = Routing {
        canary: Some(Canary {
            number: 2,
            percent: 101,
            sticky_user: false,
            baseline: Default::default(),
        }),
        ..live(1)
    };
    assert!(catalog.set_routing("greet", &too_much, 2).await.is_err());
    assert_eq!(
        catalog.routings().await.expect("list"),
        [("greet".to_owned(), canary, 2)]
    );
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
