//! The encoded descriptor set: it decodes, is self-contained, holds every
//! service and method of the contract, every enum starts at
//! `*_UNSPECIFIED = 0`, and every message, field, enum, value, service and
//! method carries a documentation comment.

use std::collections::BTreeMap;

use profiled_proto::{FILE_DESCRIPTOR_SET, MODEL_ADMIN_NAME, PROFILE_SERVICE_NAME};
use prost::Message as _;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes")
}

fn own_files(set: &FileDescriptorSet) -> Vec<&FileDescriptorProto> {
    set.file
        .iter()
        .filter(|f| f.package() == "profiled.v1")
        .collect()
}

fn services(set: &FileDescriptorSet) -> BTreeMap<String, &ServiceDescriptorProto> {
    own_files(set)
        .into_iter()
        .flat_map(|f| f.service.iter())
        .map(|s| (format!("profiled.v1.{}", s.name()), s))
        .collect()
}

#[test]
fn descriptor_set_is_self_contained() {
    let set = descriptor_set();
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    for expected in [
        "profiled/v1/common.proto",
        "profiled/v1/embed.proto",
        "profiled/v1/search.proto",
        "profiled/v1/explain.proto",
        "profiled/v1/models.proto",
        "profiled/v1/admin.proto",
        "profiled/v1/service.proto",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    // Every import is itself in the set (reflection clients need them).
    for file in &set.file {
        for dep in &file.dependency {
            assert!(
                names.contains(&dep.as_str()),
                "{} imports {dep}, which is not in the set",
                file.name()
            );
        }
        assert_eq!(file.syntax(), "proto3", "{}", file.name());
    }
}

#[test]
fn services_and_methods_are_all_there() {
    let set = descriptor_set();
    let services = services(&set);
    assert_eq!(
        services.keys().map(String::as_str).collect::<Vec<_>>(),
        vec![MODEL_ADMIN_NAME, PROFILE_SERVICE_NAME]
    );

    // (method, input, output, client streaming, server streaming)
    let expected_profile = [
        ("Embed", "EmbedRequest", "EmbedResponse", false, false),
        (
            "EmbedStream",
            "EmbedRequest",
            "EmbedStreamResponse",
            true,
            true,
        ),
        ("Search", "SearchRequest", "SearchResponse", false, false),
        ("Explain", "ExplainRequest", "ExplainResponse", false, false),
        (
            "GetModel",
            "GetModelRequest",
            "GetModelResponse",
            false,
            false,
        ),
        (
            "ListModels",
            "ListModelsRequest",
            "ListModelsResponse",
            false,
            false,
        ),
        ("Track", "TrackRequest", "TrackResponse", false, false),
        (
            "TrackStream",
            "TrackRequest",
            "TrackStreamResponse",
            true,
            true,
        ),
        ("GetUser", "GetUserRequest", "GetUserResponse", false, false),
        (
            "DeleteUser",
            "DeleteUserRequest",
            "DeleteUserResponse",
            false,
            false,
        ),
    ];
    let expected_admin = [
        ("Reload", "ReloadRequest", "ReloadResponse", false, false),
        (
            "SetLabel",
            "SetLabelRequest",
            "SetLabelResponse",
            false,
            false,
        ),
        ("Unload", "UnloadRequest", "UnloadResponse", false, false),
    ];
    for (service, expected) in [
        (PROFILE_SERVICE_NAME, &expected_profile[..]),
        (MODEL_ADMIN_NAME, &expected_admin[..]),
    ] {
        let svc = services[service];
        let got: Vec<(&str, String, String, bool, bool)> = svc
            .method
            .iter()
            .map(|m| {
                (
                    m.name(),
                    m.input_type().to_owned(),
                    m.output_type().to_owned(),
                    m.client_streaming(),
                    m.server_streaming(),
                )
            })
            .collect();
        let want: Vec<(&str, String, String, bool, bool)> = expected
            .iter()
            .map(|&(name, input, output, cs, ss)| {
                (
                    name,
                    format!(".profiled.v1.{input}"),
                    format!(".profiled.v1.{output}"),
                    cs,
                    ss,
                )
            })
            .collect();
        assert_eq!(got, want, "methods of {service}");
    }
}

fn screaming_snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn collect_enums<'a>(
    prefix: &str,
    messages: &'a [DescriptorProto],
    out: &mut Vec<(String, &'a EnumDescriptorProto)>,
) {
    for m in messages {
        let scope = format!("{prefix}.{}", m.name());
        for e in &m.enum_type {
            out.push((format!("{scope}.{}", e.name()), e));
        }
        collect_enums(&scope, &m.nested_type, out);
    }
}

#[test]
fn every_enum_starts_at_unspecified_zero() {
    let set = descriptor_set();
    let mut enums = Vec::new();
    for file in own_files(&set) {
        for e in &file.enum_type {
            enums.push((format!("profiled.v1.{}", e.name()), e));
        }
        collect_enums("profiled.v1", &file.message_type, &mut enums);
    }
    assert!(enums.len() >= 10, "only {} enums found", enums.len());
    for (name, e) in enums {
        let first = e.value.first().expect("enum has values");
        let expected = format!("{}_UNSPECIFIED", screaming_snake(e.name()));
        assert_eq!(first.number(), 0, "{name}: first value must be 0");
        assert_eq!(first.name(), expected, "{name}: first value name");
        let zeros = e.value.iter().filter(|v| v.number() == 0).count();
        assert_eq!(zeros, 1, "{name}: exactly one value may be 0");
        let prefix = format!("{}_", screaming_snake(e.name()));
        for v in &e.value {
            assert!(
                v.name().starts_with(&prefix),
                "{name}: value {} must start with {prefix}",
                v.name()
            );
        }
    }
}

/// Paths (per `descriptor.proto` field numbers) of every element that must
/// carry a leading comment, with a readable name for failures.
fn documented_paths(file: &FileDescriptorProto) -> Vec<(Vec<i32>, String)> {
    fn message(
        path: Vec<i32>,
        name: String,
        m: &DescriptorProto,
        out: &mut Vec<(Vec<i32>, String)>,
    ) {
        for (i, f) in m.field.iter().enumerate() {
            let mut p = path.clone();
            p.extend([2, i as i32]);
            out.push((p, format!("{name}.{}", f.name())));
        }
        for (i, nested) in m.nested_type.iter().enumerate() {
            // Map entries are synthesised by protoc/protox; they have no source.
            if nested.options.as_ref().is_some_and(|o| o.map_entry()) {
                continue;
            }
            let mut p = path.clone();
            p.extend([3, i as i32]);
            message(p.clone(), format!("{name}.{}", nested.name()), nested, out);
            out.push((p, format!("{name}.{}", nested.name())));
        }
        for (i, e) in m.enum_type.iter().enumerate() {
            let mut p = path.clone();
            p.extend([4, i as i32]);
            enumeration(p, format!("{name}.{}", e.name()), e, out);
        }
        for (i, o) in m.oneof_decl.iter().enumerate() {
            // proto3 `optional` fields are synthetic oneofs named `_field`.
            if o.name().starts_with('_') {
                continue;
            }
            let mut p = path.clone();
            p.extend([8, i as i32]);
            out.push((p, format!("{name}.{} (oneof)", o.name())));
        }
    }
    fn enumeration(
        path: Vec<i32>,
        name: String,
        e: &EnumDescriptorProto,
        out: &mut Vec<(Vec<i32>, String)>,
    ) {
        out.push((path.clone(), name.clone()));
        for (i, v) in e.value.iter().enumerate() {
            let mut p = path.clone();
            p.extend([2, i as i32]);
            out.push((p, format!("{name}.{}", v.name())));
        }
    }

    let mut out = Vec::new();
    for (i, m) in file.message_type.iter().enumerate() {
        out.push((vec![4, i as i32], m.name().to_owned()));
        message(vec![4, i as i32], m.name().to_owned(), m, &mut out);
    }
    for (i, e) in file.enum_type.iter().enumerate() {
        enumeration(vec![5, i as i32], e.name().to_owned(), e, &mut out);
    }
    for (i, s) in file.service.iter().enumerate() {
        out.push((vec![6, i as i32], s.name().to_owned()));
        for (j, m) in s.method.iter().enumerate() {
            out.push((
                vec![6, i as i32, 2, j as i32],
                format!("{}.{}", s.name(), m.name()),
            ));
        }
    }
    out
}

#[test]
fn every_element_is_documented() {
    let set = descriptor_set();
    let mut undocumented = Vec::new();
    let mut checked = 0usize;
    for file in own_files(&set) {
        let info = file
            .source_code_info
            .as_ref()
            .expect("source info is kept in the descriptor set");
        let comments: BTreeMap<&[i32], &str> = info
            .location
            .iter()
            .map(|l| (l.path.as_slice(), l.leading_comments()))
            .collect();
        for (path, name) in documented_paths(file) {
            checked += 1;
            let doc = comments.get(path.as_slice()).copied().unwrap_or("");
            if doc.trim().is_empty() {
                undocumented.push(format!("{}: {name}", file.name()));
            }
        }
    }
    assert!(checked > 200, "only {checked} elements checked");
    assert!(
        undocumented.is_empty(),
        "undocumented elements:\n{}",
        undocumented.join("\n")
    );
}
