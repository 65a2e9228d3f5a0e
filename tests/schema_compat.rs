//! The compatibility checker, rule family by rule family: each case states the differences
//! found and the verdict under BACKWARD, FORWARD and FULL.

use better_auth_events::schema::compat::{self, CheckOptions, CompatibilityMode, DifferenceKind as K};
use serde_json::{Value, json};

/// A case: old and new schema, content model default, expected difference kinds (with
/// pointers), and whether BACKWARD and FORWARD hold. FULL must hold exactly when both do.
struct Case {
    name: &'static str,
    old: Value,
    new: Value,
    closed_by_default: bool,
    differences: Vec<(&'static str, K)>,
    backward: bool,
    forward: bool,
}

fn case(
    name: &'static str,
    old: Value,
    new: Value,
    differences: Vec<(&'static str, K)>,
    backward: bool,
    forward: bool,
) -> Case {
    Case { name, old, new, closed_by_default: false, differences, backward, forward }
}

fn closed(mut c: Case) -> Case {
    c.closed_by_default = true;
    c
}

fn run(cases: Vec<Case>) -> usize {
    let n = cases.len();
    for c in cases {
        let options = CheckOptions { closed_by_default: c.closed_by_default };
        let report = compat::check(&c.old, &c.new, CompatibilityMode::Backward, options);
        let found: Vec<(String, K)> = report.differences.iter().map(|d| (d.pointer.clone(), d.kind.clone())).collect();
        let expected: Vec<(String, K)> = c.differences.iter().map(|(p, k)| ((*p).to_owned(), k.clone())).collect();
        assert_eq!(found, expected, "case `{}`: differences", c.name);
        assert_eq!(report.is_compatible(), c.backward, "case `{}`: BACKWARD", c.name);
        let fwd = compat::check(&c.old, &c.new, CompatibilityMode::Forward, options);
        assert_eq!(fwd.is_compatible(), c.forward, "case `{}`: FORWARD", c.name);
        let full = compat::check(&c.old, &c.new, CompatibilityMode::Full, options);
        assert_eq!(full.is_compatible(), c.backward && c.forward, "case `{}`: FULL", c.name);
        let none = compat::check(&c.old, &c.new, CompatibilityMode::None, options);
        assert!(none.is_compatible(), "case `{}`: NONE always holds", c.name);
    }
    n
}

fn obj(props: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": props, "required": required })
}

fn obj_closed(props: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false })
}

#[test]
fn identical_and_annotation_only_changes_are_compatible_both_ways() {
    let s = obj(json!({ "a": { "type": "string" } }), &["a"]);
    run(vec![
        case("identical", s.clone(), s.clone(), vec![], true, true),
        case(
            "description changed",
            json!({ "type": "string", "description": "old" }),
            json!({ "type": "string", "description": "new" }),
            vec![("/description", K::AnnotationChanged)],
            true,
            true,
        ),
        case(
            "title added",
            json!({ "type": "integer" }),
            json!({ "type": "integer", "title": "Age" }),
            vec![("/title", K::AnnotationChanged)],
            true,
            true,
        ),
    ]);
}

#[test]
fn type_changes() {
    run(vec![
        case(
            "integer to number widens",
            json!({ "type": "integer" }),
            json!({ "type": "number" }),
            vec![("/type", K::TypeWidened)],
            true,
            false,
        ),
        case(
            "number to integer narrows",
            json!({ "type": "number" }),
            json!({ "type": "integer" }),
            vec![("/type", K::TypeNarrowed)],
            false,
            true,
        ),
        case(
            "string to integer changes",
            json!({ "type": "string" }),
            json!({ "type": "integer" }),
            vec![("/type", K::TypeChanged)],
            false,
            false,
        ),
        case(
            "made nullable widens",
            json!({ "type": "string" }),
            json!({ "type": ["string", "null"] }),
            vec![("/type", K::TypeWidened)],
            true,
            false,
        ),
        case(
            "made non-nullable narrows",
            json!({ "type": ["string", "null"] }),
            json!({ "type": "string" }),
            vec![("/type", K::TypeNarrowed)],
            false,
            true,
        ),
        case(
            "type constraint removed widens",
            json!({ "type": "string" }),
            json!({}),
            vec![("/type", K::TypeWidened)],
            true,
            false,
        ),
        case(
            "type constraint added narrows",
            json!({}),
            json!({ "type": "string" }),
            vec![("/type", K::TypeNarrowed)],
            false,
            true,
        ),
        case("false to true schema widens", json!(false), json!(true), vec![("", K::TypeWidened)], true, false),
    ]);
}

#[test]
fn properties_in_open_content_models() {
    let a = json!({ "a": { "type": "string" } });
    let ab = json!({ "a": { "type": "string" }, "b": { "type": "integer" } });
    run(vec![
        case(
            "optional property added to an open model narrows",
            obj(a.clone(), &["a"]),
            obj(ab.clone(), &["a"]),
            vec![("/properties/b", K::PropertyAddedToOpenModel)],
            false,
            true,
        ),
        case(
            "required property added to an open model narrows",
            obj(a.clone(), &["a"]),
            obj(ab.clone(), &["a", "b"]),
            vec![("/properties/b", K::RequiredPropertyAddedToOpenModel)],
            false,
            true,
        ),
        case(
            "optional property removed from an open model widens",
            obj(ab.clone(), &["a"]),
            obj(a.clone(), &["a"]),
            vec![("/properties/b", K::PropertyRemovedFromOpenModel)],
            true,
            false,
        ),
        case(
            "required property removed from an open model widens",
            obj(ab.clone(), &["a", "b"]),
            obj(a.clone(), &["a"]),
            vec![("/properties/b", K::RequiredAttributeRemoved)],
            true,
            false,
        ),
    ]);
}

#[test]
fn properties_in_closed_content_models() {
    let a = json!({ "a": { "type": "string" } });
    let ab = json!({ "a": { "type": "string" }, "b": { "type": "integer" } });
    run(vec![
        case(
            "optional property added to a closed model widens",
            obj_closed(a.clone(), &["a"]),
            obj_closed(ab.clone(), &["a"]),
            vec![("/properties/b", K::PropertyAddedToClosedModel)],
            true,
            false,
        ),
        case(
            "required property added to a closed model breaks both",
            obj_closed(a.clone(), &["a"]),
            obj_closed(ab.clone(), &["a", "b"]),
            vec![("/properties/b", K::RequiredPropertyAddedToClosedModel)],
            false,
            false,
        ),
        case(
            "optional property removed from a closed model narrows",
            obj_closed(ab.clone(), &["a"]),
            obj_closed(a.clone(), &["a"]),
            vec![("/properties/b", K::PropertyRemovedFromClosedModel)],
            false,
            true,
        ),
        case(
            "required property removed from a closed model breaks both",
            obj_closed(ab.clone(), &["a", "b"]),
            obj_closed(a.clone(), &["a"]),
            vec![("/properties/b", K::RequiredPropertyRemovedFromClosedModel)],
            false,
            false,
        ),
        closed(case(
            "Rust schemas are closed by default: an added optional field widens",
            obj(a.clone(), &["a"]),
            obj(ab.clone(), &["a"]),
            vec![("/properties/b", K::PropertyAddedToClosedModel)],
            true,
            false,
        )),
        closed(case(
            "Rust schemas are closed by default: a removed optional field narrows",
            obj(ab.clone(), &["a"]),
            obj(a.clone(), &["a"]),
            vec![("/properties/b", K::PropertyRemovedFromClosedModel)],
            false,
            true,
        )),
        closed(case(
            "an explicitly open Rust schema stays open",
            json!({ "type": "object", "properties": a.clone(), "additionalProperties": true }),
            json!({ "type": "object", "properties": ab.clone(), "additionalProperties": true }),
            vec![("/properties/b", K::PropertyAddedToOpenModel)],
            false,
            true,
        )),
    ]);
}

#[test]
fn required_attributes_and_content_model_switches() {
    let ab = json!({ "a": { "type": "string" }, "b": { "type": "integer" } });
    run(vec![
        case(
            "a property becomes required",
            obj(ab.clone(), &["a"]),
            obj(ab.clone(), &["a", "b"]),
            vec![("/properties/b", K::RequiredAttributeAdded)],
            false,
            true,
        ),
        case(
            "a property becomes optional",
            obj(ab.clone(), &["a", "b"]),
            obj(ab.clone(), &["a"]),
            vec![("/properties/b", K::RequiredAttributeRemoved)],
            true,
            false,
        ),
        case(
            "closed model opened",
            obj_closed(ab.clone(), &[]),
            obj(ab.clone(), &[]),
            vec![("/additionalProperties", K::AdditionalPropertiesOpened)],
            true,
            false,
        ),
        case(
            "open model closed",
            obj(ab.clone(), &[]),
            obj_closed(ab.clone(), &[]),
            vec![("/additionalProperties", K::AdditionalPropertiesClosed)],
            false,
            true,
        ),
        case(
            "required names a property no schema lists",
            json!({ "type": "object" }),
            json!({ "type": "object", "required": ["x"] }),
            vec![("/required/x", K::RequiredAttributeAdded)],
            false,
            true,
        ),
    ]);
}

#[test]
fn enums_and_consts() {
    run(vec![
        case(
            "enum extended",
            json!({ "enum": ["a", "b"] }),
            json!({ "enum": ["a", "b", "c"] }),
            vec![("/enum", K::EnumExtended)],
            true,
            false,
        ),
        case(
            "enum reduced",
            json!({ "enum": ["a", "b", "c"] }),
            json!({ "enum": ["a", "b"] }),
            vec![("/enum", K::EnumNarrowed)],
            false,
            true,
        ),
        case(
            "enum swapped",
            json!({ "enum": ["a", "b"] }),
            json!({ "enum": ["a", "c"] }),
            vec![("/enum", K::EnumChanged)],
            false,
            false,
        ),
        case(
            "enum added",
            json!({ "type": "string" }),
            json!({ "type": "string", "enum": ["a"] }),
            vec![("/enum", K::EnumNarrowed)],
            false,
            true,
        ),
        case(
            "enum removed",
            json!({ "type": "string", "enum": ["a"] }),
            json!({ "type": "string" }),
            vec![("/enum", K::EnumExtended)],
            true,
            false,
        ),
        case("enum reordered", json!({ "enum": ["a", "b"] }), json!({ "enum": ["b", "a"] }), vec![], true, true),
        case(
            "const changed",
            json!({ "const": "v1" }),
            json!({ "const": "v2" }),
            vec![("/const", K::ConstChanged)],
            false,
            false,
        ),
    ]);
}

#[test]
fn string_and_number_bounds() {
    run(vec![
        case(
            "maxLength lowered",
            json!({ "type": "string", "maxLength": 10 }),
            json!({ "type": "string", "maxLength": 5 }),
            vec![("/maxLength", K::LimitTightened("maxLength"))],
            false,
            true,
        ),
        case(
            "maxLength raised",
            json!({ "type": "string", "maxLength": 5 }),
            json!({ "type": "string", "maxLength": 10 }),
            vec![("/maxLength", K::LimitLoosened("maxLength"))],
            true,
            false,
        ),
        case(
            "minLength added",
            json!({ "type": "string" }),
            json!({ "type": "string", "minLength": 1 }),
            vec![("/minLength", K::LimitTightened("minLength"))],
            false,
            true,
        ),
        case(
            "minLength removed",
            json!({ "type": "string", "minLength": 1 }),
            json!({ "type": "string" }),
            vec![("/minLength", K::LimitLoosened("minLength"))],
            true,
            false,
        ),
        case(
            "maximum lowered",
            json!({ "type": "integer", "maximum": 100 }),
            json!({ "type": "integer", "maximum": 10 }),
            vec![("/maximum", K::LimitTightened("maximum"))],
            false,
            true,
        ),
        case(
            "minimum lowered",
            json!({ "type": "integer", "minimum": 10 }),
            json!({ "type": "integer", "minimum": 0 }),
            vec![("/minimum", K::LimitLoosened("minimum"))],
            true,
            false,
        ),
        case(
            "exclusiveMinimum raised",
            json!({ "type": "number", "exclusiveMinimum": 0 }),
            json!({ "type": "number", "exclusiveMinimum": 1 }),
            vec![("/exclusiveMinimum", K::LimitTightened("exclusiveMinimum"))],
            false,
            true,
        ),
        case(
            "multipleOf to a divisor loosens",
            json!({ "type": "integer", "multipleOf": 4 }),
            json!({ "type": "integer", "multipleOf": 2 }),
            vec![("/multipleOf", K::LimitLoosened("multipleOf"))],
            true,
            false,
        ),
        case(
            "multipleOf to a multiple tightens",
            json!({ "type": "integer", "multipleOf": 2 }),
            json!({ "type": "integer", "multipleOf": 4 }),
            vec![("/multipleOf", K::LimitTightened("multipleOf"))],
            false,
            true,
        ),
        case(
            "pattern added",
            json!({ "type": "string" }),
            json!({ "type": "string", "pattern": "^a" }),
            vec![("/pattern", K::PatternAdded)],
            false,
            true,
        ),
        case(
            "pattern removed",
            json!({ "type": "string", "pattern": "^a" }),
            json!({ "type": "string" }),
            vec![("/pattern", K::PatternRemoved)],
            true,
            false,
        ),
        case(
            "pattern changed",
            json!({ "type": "string", "pattern": "^a" }),
            json!({ "type": "string", "pattern": "^b" }),
            vec![("/pattern", K::PatternChanged)],
            false,
            false,
        ),
        case(
            "format added",
            json!({ "type": "string" }),
            json!({ "type": "string", "format": "email" }),
            vec![("/format", K::FormatAdded)],
            false,
            true,
        ),
        case(
            "format changed",
            json!({ "type": "string", "format": "email" }),
            json!({ "type": "string", "format": "uuid" }),
            vec![("/format", K::FormatChanged)],
            false,
            false,
        ),
    ]);
}

#[test]
fn arrays() {
    run(vec![
        case(
            "item type widened",
            json!({ "type": "array", "items": { "type": "integer" } }),
            json!({ "type": "array", "items": { "type": "number" } }),
            vec![("/items/type", K::TypeWidened)],
            true,
            false,
        ),
        case(
            "maxItems lowered",
            json!({ "type": "array", "maxItems": 10 }),
            json!({ "type": "array", "maxItems": 3 }),
            vec![("/maxItems", K::LimitTightened("maxItems"))],
            false,
            true,
        ),
        case(
            "uniqueItems added",
            json!({ "type": "array" }),
            json!({ "type": "array", "uniqueItems": true }),
            vec![("/uniqueItems", K::UniqueItemsAdded)],
            false,
            true,
        ),
    ]);
}

#[test]
fn combined_schemas() {
    run(vec![
        case(
            "oneOf alternative added",
            json!({ "oneOf": [{ "type": "string" }, { "type": "integer" }] }),
            json!({ "oneOf": [{ "type": "string" }, { "type": "integer" }, { "type": "boolean" }] }),
            vec![("/oneOf", K::SumTypeExtended)],
            true,
            false,
        ),
        case(
            "anyOf alternative removed",
            json!({ "anyOf": [{ "type": "string" }, { "type": "integer" }] }),
            json!({ "anyOf": [{ "type": "string" }] }),
            vec![("/anyOf", K::SumTypeNarrowed)],
            false,
            true,
        ),
        case(
            "anyOf member changed in place",
            json!({ "anyOf": [{ "type": "string" }, { "type": "integer" }] }),
            json!({ "anyOf": [{ "type": "string" }, { "type": "number" }] }),
            vec![("/anyOf/1/type", K::TypeWidened)],
            true,
            false,
        ),
        case(
            "allOf member added",
            json!({ "allOf": [{ "type": "object" }] }),
            json!({ "allOf": [{ "type": "object" }, { "required": ["a"] }] }),
            vec![("/allOf", K::ProductTypeExtended)],
            false,
            true,
        ),
        case(
            "oneOf replaced by anyOf",
            json!({ "oneOf": [{ "type": "string" }] }),
            json!({ "anyOf": [{ "type": "string" }] }),
            vec![("/anyOf", K::CombinedTypeChanged), ("/oneOf", K::CombinedTypeChanged)],
            false,
            false,
        ),
    ]);
}

#[test]
fn nested_objects_and_references() {
    let defs_old = json!({
        "type": "object",
        "properties": { "address": { "$ref": "#/$defs/Address" } },
        "required": ["address"],
        "$defs": { "Address": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } }
    });
    let defs_new = json!({
        "type": "object",
        "properties": { "address": { "$ref": "#/$defs/Address" } },
        "required": ["address"],
        "$defs": { "Address": {
            "type": "object",
            "properties": { "city": { "type": "string" }, "zip": { "type": "string" } },
            "required": ["city", "zip"]
        } }
    });
    let recursive = json!({
        "$ref": "#/$defs/Node",
        "$defs": { "Node": { "type": "object", "properties": { "next": { "$ref": "#/$defs/Node" } } } }
    });
    run(vec![
        closed(case(
            "a required field added deep inside a referenced struct is caught",
            defs_old.clone(),
            defs_new,
            vec![("/properties/address/properties/zip", K::RequiredPropertyAddedToClosedModel)],
            false,
            false,
        )),
        case(
            "an inline schema equal to the referenced one is no change",
            defs_old,
            json!({
                "type": "object",
                "properties": { "address": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } },
                "required": ["address"]
            }),
            vec![],
            true,
            true,
        ),
        case("recursive schemas terminate", recursive.clone(), recursive, vec![], true, true),
    ]);
}

#[test]
fn transitive_modes_and_pointers_escape() {
    assert!(CompatibilityMode::BackwardTransitive.is_transitive());
    assert!(!CompatibilityMode::Full.is_transitive());
    let old = obj(json!({ "a/b": { "type": "string" } }), &[]);
    let new = obj(json!({ "a/b": { "type": "integer" } }), &[]);
    let report = compat::check(&old, &new, CompatibilityMode::BackwardTransitive, CheckOptions::default());
    assert_eq!(report.differences[0].pointer, "/properties/a~1b/type");
    assert_eq!(report.differences[0].to_string(), "type changed at `/properties/a~1b/type`");
    assert!(!report.is_compatible());
}
