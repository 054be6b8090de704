//! The merged catalog: default prefixes, the priority strategy, filters, overrides, and catalog
//! changes reaching clients.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn prefix_is_the_default() {
    let a = Fixture::http("both", "a");
    let gw = Gateway::start(&format!(
        "name: cat\nbackends:\n{}{}",
        http_backend("a", &a.url),
        stdio_backend("b")
    ));
    let mut c = gw.client();
    c.legacy_init().await;
    let r = c.call("tools/list", json!({})).await;
    let names = r.tool_names();
    for n in ["a_echo", "b_echo", "a_counter", "b_counter", "a_test_sampling"] {
        assert!(names.contains(&n.to_owned()), "{n} missing from {names:?}");
    }
    assert!(names.iter().all(|n| n.starts_with("a_") || n.starts_with("b_")), "{names:?}");
    // No paging configured: a single page.
    assert!(r.result().get("nextCursor").is_none(), "{}", r.result());
    // Every tool is there once per backend.
    let per_backend = names.iter().filter(|n| n.starts_with("a_")).count();
    assert_eq!(per_backend, names.len() - per_backend, "{names:?}");
    let r = c.modern_call("tools/list", json!({})).await;
    assert!(r.result().get("nextCursor").is_none(), "{}", r.result());
    assert_eq!(r.tool_names().len(), names.len());
}

#[tokio::test]
async fn custom_prefix_format() {
    let gw = Gateway::start(&format!(
        "name: cat\nbackends:\n{}aggregation:\n  conflictResolutionConfig:\n    prefixFormat: \"{{backend}}.\"\n",
        stdio_backend("s")
    ));
    let c = gw.client();
    let names = c.tool_names(true).await;
    assert!(names.contains(&"s.echo".to_owned()), "{names:?}");
    let r = c.tool(true, "s.echo", json!({ "message": "dot" })).await;
    assert_eq!(r.text(), "Echo: dot");
}

#[tokio::test]
async fn priority_keeps_bare_names_for_the_first_backend() {
    let a = Fixture::http("both", "a");
    // Push the HTTP fixture's per-process counter to 5, directly.
    let direct = Client::new(&a.url);
    for _ in 0..5 {
        direct.tool(true, "counter", json!({})).await;
    }
    let yaml = format!(
        "name: cat\nbackends:\n{}{}aggregation:\n  conflictResolution: priority\n  conflictResolutionConfig:\n    priorityOrder: [a, b]\n",
        stdio_backend("b"),
        http_backend("a", &a.url),
    );
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    let names = c.tool_names(false).await;
    assert!(names.contains(&"echo".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("a_") || n.starts_with("b_")), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "names are unique: {names:?}");
    assert_eq!(c.tool(false, "echo", json!({ "message": "p" })).await.text(), "Echo: p");
    // `counter` belongs to `a` (first in priorityOrder, though second in config order).
    assert_eq!(c.tool(false, "counter", json!({})).await.text(), "6");
}

#[tokio::test]
async fn filter_hides_a_tool() {
    let yaml = format!(
        "name: cat\nbackends:\n{}{}aggregation:\n  tools:\n    - backend: a\n      filter: [echo, counter]\n",
        stdio_backend("a"),
        stdio_backend("b")
    );
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    let names = c.tool_names(false).await;
    let a_names: Vec<_> = names.iter().filter(|n| n.starts_with("a_")).cloned().collect();
    assert_eq!(a_names, vec!["a_counter".to_owned(), "a_echo".to_owned()], "{names:?}");
    assert!(names.contains(&"b_whoami".to_owned()), "other backends are unfiltered: {names:?}");
    for era in [false, true] {
        let r = c.tool(era, "a_whoami", json!({})).await;
        assert_eq!(r.error_code(), -32602, "modern={era}: {:?}", r.message);
    }
    assert_eq!(c.tool(false, "a_echo", json!({ "message": "f" })).await.text(), "Echo: f");
}

#[tokio::test]
async fn override_renames_and_routes_to_the_original() {
    let yaml = format!(
        "name: cat\nbackends:\n{}aggregation:\n  tools:\n    - backend: a\n      overrides:\n        echo:\n          name: shout\n          description: Shouts back\n",
        stdio_backend("a")
    );
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    let r = c.call("tools/list", json!({})).await;
    let names = r.tool_names();
    assert!(names.contains(&"a_shout".to_owned()), "override names are prefixed: {names:?}");
    assert!(!names.contains(&"a_echo".to_owned()), "{names:?}");
    assert!(!names.contains(&"shout".to_owned()), "{names:?}");
    let tool = r.result()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "a_shout")
        .unwrap()
        .clone();
    assert_eq!(tool["description"], "Shouts back");
    assert_eq!(tool["inputSchema"]["required"], json!(["message"]), "{tool}");
    for era in [false, true] {
        let r = c.tool(era, "a_shout", json!({ "message": "hey" })).await;
        assert_eq!(r.text(), "Echo: hey", "modern={era}");
        assert_eq!(c.tool(era, "a_echo", json!({ "message": "x" })).await.error_code(), -32602);
    }
}

async fn list_changed_reaches_legacy_stream(backend: &str, yaml: String) {
    let gw = Gateway::start(&yaml);
    let c = client_for(&gw, false).await;
    let dynamic = format!("{backend}_dynamic_tool");
    assert!(!c.tool_names(false).await.contains(&dynamic));
    let mut stream = c.get_stream().await;
    assert_eq!(stream.status, 200);
    assert!(stream.is_sse);

    let r = c.tool(false, &format!("{backend}_notify_list_changed"), json!({})).await;
    assert!(r.text().contains("dynamic_tool"), "{:?}", r.message);

    poll(Duration::from_secs(15), "dynamic_tool in tools/list", || {
        let c = c.clone();
        let d = dynamic.clone();
        async move { c.tool_names(false).await.contains(&d).then_some(()) }
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = stream
            .next_within(left)
            .await
            .expect("notifications/tools/list_changed on the GET stream");
        if m["method"] == "notifications/tools/list_changed" {
            break;
        }
    }
    // The new tool is callable, for both eras.
    let r = c.tool(false, &dynamic, json!({})).await;
    assert_eq!(r.text(), "dynamic_tool called", "{:?}", r.message);
    let r = c.tool(true, &dynamic, json!({})).await;
    assert_eq!(r.text(), "dynamic_tool called", "{:?}", r.message);
}

#[tokio::test]
async fn list_changed_from_stdio_backend() {
    list_changed_reaches_legacy_stream(
        "s",
        format!("name: cat\nbackends:\n{}", stdio_backend("s")),
    )
    .await;
}

#[tokio::test]
async fn list_changed_from_legacy_http_backend() {
    let f = Fixture::http("legacy", "h");
    list_changed_reaches_legacy_stream(
        "h",
        format!("name: cat\nbackends:\n{}", http_backend("h", &f.url)),
    )
    .await;
}

#[tokio::test]

async fn list_changed_from_modern_http_backend() {
    let f = Fixture::http("modern", "h");
    list_changed_reaches_legacy_stream(
        "h",
        format!("name: cat\nbackends:\n{}", http_backend("h", &f.url)),
    )
    .await;
}

/// The fixture's side of the bug above works: talking to the Modern fixture directly, a listen
/// stream gets `notifications/tools/list_changed` after `notify_list_changed`.
#[tokio::test]
async fn modern_fixture_announces_list_changed_on_listen() {
    let f = Fixture::http("modern", "h");
    let c = Client::new(&f.url);
    let (_, mut ev) = c
        .modern_start(
            "subscriptions/listen",
            json!({ "notifications": { "toolsListChanged": true } }),
        )
        .await;
    let ack = ev.next().await;
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged", "{ack}");
    let r = c.tool(true, "notify_list_changed", json!({})).await;
    assert!(r.text().contains("dynamic_tool"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = ev.next_within(left).await.expect("list_changed from the fixture");
        if m["method"] == "notifications/tools/list_changed" {
            break;
        }
    }
}

/// With `server.pageSize`, every list is paged; walking the cursors yields each tool once, in
/// both eras, and a forged cursor is -32602.
#[tokio::test]
async fn pages_follow_server_page_size() {
    let gw = Gateway::start(&format!(
        "name: cat\nbackends:\n{}server:\n  pageSize: 7\n",
        stdio_backend("s")
    ));
    let mut c = gw.client();
    c.legacy_init().await;
    for modern in [false, true] {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let params = match &cursor {
                Some(cur) => json!({ "cursor": cur }),
                None => json!({}),
            };
            let r = if modern {
                c.modern_call("tools/list", params).await
            } else {
                c.call("tools/list", params).await
            };
            let page = r.tool_names();
            assert!(page.len() <= 7, "{page:?}");
            names.extend(page);
            pages += 1;
            match r.result().get("nextCursor").and_then(|v| v.as_str()) {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert!(pages > 1, "expected several pages");
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a tool came twice: {names:?}");
        assert!(names.contains(&"s_echo".to_owned()));
    }
    let r = c.call("tools/list", json!({ "cursor": "not-a-cursor" })).await;
    assert_eq!(r.error()["code"], -32602);
}
