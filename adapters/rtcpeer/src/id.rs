//! Ids: the spec types them `Long`/`number`, JavaScript clients often send them as strings.
//! Both are accepted on input; the bridge always sends numbers.

use serde::{Deserialize, Deserializer, de};

/// A user, room or client id.
pub type Id = i64;

#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient {
    Int(i64),
    Float(f64),
    Text(String),
}

fn convert<E: de::Error>(v: Lenient) -> Result<Id, E> {
    match v {
        Lenient::Int(i) => Ok(i),
        Lenient::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        Lenient::Float(f) => Err(E::custom(format!("id {f} is not an integer"))),
        Lenient::Text(s) => s
            .trim()
            .parse()
            .map_err(|_| E::custom(format!("id {s:?} is not a number"))),
    }
}

/// Deserializes a required id from a number or a numeric string.
pub fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
    convert(Lenient::deserialize(d)?)
}

/// Deserializes an optional id (`null` or absent → `None`).
pub fn de_opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Id>, D::Error> {
    match Option::<Lenient>::deserialize(d)? {
        None => Ok(None),
        Some(v) => convert(v).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "de_id")]
        id: Id,
        #[serde(default, deserialize_with = "de_opt_id")]
        opt: Option<Id>,
    }

    #[test]
    fn numbers_and_numeric_strings() {
        let t: T = serde_json::from_str(r#"{"id":"42","opt":7}"#).unwrap();
        assert_eq!((t.id, t.opt), (42, Some(7)));
        let t: T = serde_json::from_str(r#"{"id":5.0}"#).unwrap();
        assert_eq!((t.id, t.opt), (5, None));
        assert!(serde_json::from_str::<T>(r#"{"id":"abc"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"id":1.5}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"id":true}"#).is_err());
    }
}
