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
