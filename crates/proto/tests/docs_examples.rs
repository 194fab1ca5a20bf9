//! docs/api.md stays in sync with the protos: every grpcurl example body
//! (`-d '…' … ADDR service/Method`) is valid protobuf JSON for that method's
//! request type, every `profiled.v1.X` name the page mentions exists, and the
//! sample response parses as its message.

use std::path::PathBuf;

use profiled_proto::FILE_DESCRIPTOR_SET;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

fn api_md() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/api.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn pool() -> DescriptorPool {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

fn parse(desc: MessageDescriptor, json: &str) -> Result<DynamicMessage, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(json);
    let msg = DynamicMessage::deserialize(desc, &mut de)?;
    de.end()?;
    Ok(msg)
}

/// The request type of `package.Service/Method`, if it is one of ours.
fn input_of(pool: &DescriptorPool, full_method: &str) -> Option<MessageDescriptor> {
    let (service, method) = full_method.split_once('/')?;
    let service = pool.get_service_by_name(service)?;
    let method = service.methods().find(|m| m.name() == method)?;
    Some(method.input())
}

#[test]
fn grpcurl_examples_are_valid_requests() {
    let doc = api_md();
    let pool = pool();
    let mut checked = 0;
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("-d '") {
        let after = &rest[start + 4..];
        let end = after.find('\'').expect("closing quote of a -d body");
        let body = &after[..end];
        // The method is the first `profiled.v1.` / `grpc.` token after the body.
        let tail = &after[end + 1..];
        rest = tail;
        // curl examples of the HTTP/JSON edge (`curl … -d '…'`, possibly
        // continued over indented lines) are checked by
        // tests/e2e/tests/http.rs (each body parses as its route's request).
        let before = &doc[..doc.len() - after.len() - 4];
        let command = before
            .lines()
            .rev()
            .find(|l| !l.starts_with(' ') && !l.trim().is_empty())
            .unwrap_or_default();
        if command.split_whitespace().next() == Some("curl") {
            continue;
        }
        let method = tail
            .split_whitespace()
            .find(|w| w.contains('/') && (w.starts_with("profiled.v1.") || w.starts_with("grpc.")))
            .unwrap_or_else(|| panic!("no method after example body {body}"));
        if method.starts_with("grpc.") {
            continue;
        }
        let desc = input_of(&pool, method).unwrap_or_else(|| panic!("unknown method {method}"));
        if let Err(e) = parse(desc.clone(), body) {
            panic!(
                "example for {method} is not a valid {}: {e}\n{body}",
                desc.full_name()
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} examples found");
}

#[test]
fn sample_response_parses() {
    let doc = api_md();
    let start = doc.find("```json\n").expect("a JSON sample") + "```json\n".len();
    let end = start + doc[start..].find("```").expect("end of the JSON sample");
    let desc = pool()
        .get_message_by_name("profiled.v1.EmbedResponse")
        .expect("EmbedResponse");
    parse(desc, &doc[start..end]).expect("the sample is a valid EmbedResponse");
}

#[test]
fn every_named_type_exists() {
    let doc = api_md();
    let pool = pool();
    let mut checked = 0;
    for (i, _) in doc.match_indices("profiled.v1.") {
        let name: String = doc[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
            .collect();
        let name = name.trim_end_matches('.');
        let known = pool.get_message_by_name(name).is_some()
            || pool.get_service_by_name(name).is_some()
            || pool.get_enum_by_name(name).is_some();
        assert!(
            known,
            "docs/api.md names {name}, which the protos do not define"
        );
        checked += 1;
    }
    assert!(checked >= 10);
}

#[test]
fn the_json_check_rejects_wrong_examples() {
    let desc = pool()
        .get_message_by_name("profiled.v1.SearchRequest")
        .expect("SearchRequest");
    assert!(parse(desc.clone(), r#"{"user_id": "196", "k": 5}"#).is_ok());
    assert!(
        parse(desc.clone(), r#"{"kk": 5}"#).is_err(),
        "unknown field"
    );
    assert!(
        parse(desc.clone(), r#"{"target": "ITEMS"}"#).is_err(),
        "bad enum name"
    );
    assert!(parse(desc, r#"{"k": "ten"}"#).is_err(), "wrong type");
}
