//! D-Bus values as JSON, for `--json` output and for reading dictionaries whose keys may grow.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use zbus::{OwnedVariant, Variant};

pub fn to_json(v: &Variant<'_>) -> Value {
    match v {
        Variant::U8(n) => Value::from(*n),
        Variant::Bool(b) => Value::from(*b),
        Variant::I16(n) => Value::from(*n),
        Variant::U16(n) => Value::from(*n),
        Variant::I32(n) => Value::from(*n),
        Variant::U32(n) => Value::from(*n),
        Variant::I64(n) => Value::from(*n),
        Variant::U64(n) => Value::from(*n),
        // JSON has no NaN or infinity.
        Variant::F64(n) => Number::from_f64(*n).map_or(Value::Null, Value::Number),
        Variant::Str(s) => Value::from(&**s),
        Variant::Signature(s) => Value::from(s.to_string()),
        Variant::ObjectPath(p) => Value::from(p.as_str()),
        Variant::Variant(inner) => to_json(inner),
        Variant::Array(a) => Value::Array(a.inner().iter().map(to_json).collect()),
        Variant::Dict(d) => Value::Object(
            d.iter()
                .map(|(k, v)| (key_string(k), to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        Variant::Structure(s) => Value::Array(s.fields().iter().map(to_json).collect()),
        // A descriptor number means nothing outside this process.
        Variant::Fd(_) => Value::Null,
    }
}

/// JSON keys are strings; D-Bus keys may be any basic type.
fn key_string(k: &Variant<'_>) -> String {
    match to_json(k) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

pub fn dict_to_json(dict: &HashMap<String, OwnedVariant>) -> Value {
    Value::Object(
        dict.iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect::<Map<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use zbus::{ObjectPath, Structure};

    fn owned(v: Variant<'static>) -> OwnedVariant {
        OwnedVariant::try_from(v).unwrap()
    }

    #[test]
    fn scalars() {
        assert_eq!(to_json(&Variant::from("x")), json!("x"));
        assert_eq!(to_json(&Variant::from(true)), json!(true));
        assert_eq!(to_json(&Variant::from(7u8)), json!(7));
        assert_eq!(to_json(&Variant::from(-7i16)), json!(-7));
        assert_eq!(to_json(&Variant::from(7u16)), json!(7));
        assert_eq!(to_json(&Variant::from(-7i32)), json!(-7));
        assert_eq!(to_json(&Variant::from(7u32)), json!(7));
        assert_eq!(to_json(&Variant::from(i64::MIN)), json!(i64::MIN));
        assert_eq!(to_json(&Variant::from(u64::MAX)), json!(u64::MAX));
        assert_eq!(to_json(&Variant::from(0.25f64)), json!(0.25));
        assert_eq!(to_json(&Variant::from(f64::NAN)), Value::Null);
        let path = ObjectPath::try_from("/org/pibuilder/PiBuilder1/jobs/1").unwrap();
        assert_eq!(
            to_json(&Variant::from(path)),
            json!("/org/pibuilder/PiBuilder1/jobs/1")
        );
        let nested = Variant::Variant(Box::new(Variant::from(3u32)));
        assert_eq!(to_json(&nested), json!(3));
    }

    #[test]
    fn containers() {
        assert_eq!(to_json(&Variant::from(vec!["a", "b"])), json!(["a", "b"]));
        let mut by_number = HashMap::new();
        by_number.insert(1u32, "one");
        assert_eq!(to_json(&Variant::from(by_number)), json!({"1": "one"}));
        let s = Structure::from((1u32, "two", false));
        assert_eq!(to_json(&Variant::from(s)), json!([1, "two", false]));
    }

    #[test]
    fn status_dictionary_as_the_daemon_sends_it() {
        let mut aarch64: HashMap<&str, Variant<'_>> = HashMap::new();
        aarch64.insert("arch", Variant::from("aarch64"));
        aarch64.insert("state", Variant::from("registered"));
        aarch64.insert("enabled", Variant::from(true));
        let mut status = HashMap::new();
        status.insert("version".to_owned(), owned(Variant::from("0.1.0")));
        status.insert("docker_reachable".to_owned(), owned(Variant::from(false)));
        status.insert("running_jobs".to_owned(), owned(Variant::from(2u32)));
        status.insert("binfmt".to_owned(), owned(Variant::from(vec![aarch64])));
        assert_eq!(
            dict_to_json(&status),
            json!({
                "version": "0.1.0",
                "docker_reachable": false,
                "running_jobs": 2,
                "binfmt": [{"arch": "aarch64", "state": "registered", "enabled": true}],
            })
        );
    }
}
