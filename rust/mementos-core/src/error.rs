use arrow_schema::{ArrowError, DataType};

/// Errors of the core. Malformed *traces* are never errors: they get a [`crate::Status`].
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("expected an Arrow string array (string, large_string or string_view), got {0}")]
    UnsupportedType(DataType),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
}

/// `s` as one of the named `choices`, or an [`CoreError::InvalidArgument`] saying which names
/// `what` accepts (`style must be 'tutorial' or 'inplace', got "x"`): the one parser of every
/// option given by name (`Style`, the export's `Overflow`).
pub fn parse_choice<T: Copy>(what: &str, s: &str, choices: &[(&str, T)]) -> Result<T, CoreError> {
    if let Some(&(_, v)) = choices.iter().find(|(name, _)| *name == s) {
        return Ok(v);
    }
    let names: Vec<String> = choices.iter().map(|(name, _)| format!("'{name}'")).collect();
    let list = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(CoreError::InvalidArgument(format!("{what} must be {list}, got {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_choice_names_every_choice() {
        let abc = [("a", 1), ("b", 2), ("c", 3)];
        assert_eq!(parse_choice("x", "b", &abc).unwrap(), 2);
        let e = parse_choice("x", "d", &abc).unwrap_err().to_string();
        assert_eq!(e, "invalid argument: x must be 'a', 'b' or 'c', got \"d\"");
        let e = parse_choice("y", "", &[("on", true), ("off", false)]).unwrap_err().to_string();
        assert_eq!(e, "invalid argument: y must be 'on' or 'off', got \"\"");
    }
}
