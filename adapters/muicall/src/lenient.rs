//! Reading values the way legacy consoles send them: numbers as numbers or as strings
//! ("所有传入或传出参数均为字符串类型"), lists as arrays or comma-separated strings.

use serde_json::Value;

/// A non-negative integer from a JSON number or a decimal string (surrounding spaces allowed).
/// Floats are accepted only when integral (a JavaScript console may send `1.671e12`).
pub(crate) fn u64_of(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            let f = n.as_f64()?;
            (f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f)).then_some(f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Text from a JSON string, or the decimal form of a number (account names like `1001`).
pub(crate) fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A list of ids: `[1, "2"]`, `"1,2"` or a single `1` / `"1"`. `Err` names the bad element.
pub(crate) fn id_list(v: &Value) -> Result<Vec<u64>, String> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| u64_of(i).ok_or_else(|| format!("{i} is not an id")))
            .collect(),
        Value::String(s) if s.contains(',') => s
            .split(',')
            .map(|p| {
                p.trim()
                    .parse()
                    .map_err(|_| format!("{:?} is not an id", p.trim()))
            })
            .collect(),
        other => u64_of(other)
            .map(|id| vec![id])
            .ok_or_else(|| format!("{other} is not a list of ids")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_arrive_as_numbers_or_strings() {
        assert_eq!(u64_of(&json!(169918)), Some(169918));
        assert_eq!(u64_of(&json!("169918")), Some(169918));
        assert_eq!(
            u64_of(&json!(" 50354528800735233 ")),
            Some(50354528800735233)
        );
        assert_eq!(u64_of(&json!(1.671006883842e12)), Some(1671006883842));
        assert_eq!(u64_of(&json!(1.5)), None);
        assert_eq!(u64_of(&json!(-1)), None);
        assert_eq!(u64_of(&json!("abc")), None);
        assert_eq!(u64_of(&json!(null)), None);
    }

    #[test]
    fn id_lists_in_every_shape() {
        assert_eq!(id_list(&json!([1, "2"])).unwrap(), vec![1, 2]);
        assert_eq!(id_list(&json!("1, 2")).unwrap(), vec![1, 2]);
        assert_eq!(id_list(&json!("7")).unwrap(), vec![7]);
        assert_eq!(id_list(&json!(7)).unwrap(), vec![7]);
        assert!(id_list(&json!([1, "x"])).unwrap_err().contains("\"x\""));
        assert!(id_list(&json!({"a": 1})).is_err());
    }
}
