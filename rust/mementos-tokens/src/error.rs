use mementos_core::CoreError;

/// Errors of token counting. Malformed traces are not errors: they are counted as they are.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("unknown token counting backend {0:?} (available: {1})")]
    UnknownBackend(String, String),
    #[error("cannot load the tokenizer: {0}")]
    Tokenizer(String),
    #[error("the fast backend cannot reproduce this tokenizer exactly: {0}")]
    Unsupported(String),
    #[error(
        "the tokenizer does not register {0:?} as a single added token (load it with mementos_fast.load_tokenizer)"
    )]
    MissingDelimiter(&'static str),
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl From<TokensError> for CoreError {
    fn from(e: TokensError) -> Self {
        match e {
            TokensError::Core(c) => c,
            other => CoreError::InvalidArgument(other.to_string()),
        }
    }
}
