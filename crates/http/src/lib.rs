//! HTTP/1.1 for Weir's head-only L7 path, sans-IO: bytes in, decisions out, no sockets.
//!
//! Owns: parsing request and response heads ([`parse_request`], [`parse_response`]) with the
//! strict framing rules of RFC 9112 (what would let a request be smuggled is refused, with the
//! status to answer), deciding how each body is framed ([`BodyFraming`]), and walking chunked
//! bodies ([`chunked::Decoder`]) so that only size lines and trailers enter userspace while
//! chunk data can be spliced; writing forwarded request heads and Weir's own short answers.
//! Does not own I/O, policy or routing.
#![forbid(unsafe_code)]

pub mod chunked;
mod encode;
mod head;

pub use encode::{encode_request, error_response, local_response};
pub use head::{parse_request, parse_response, BodyFraming, Limits, Parsed, RequestHead, ResponseHead};

/// Why a message was refused. [`Error::status`] is the answer to send before closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The head is not valid HTTP/1.x syntax (httparse's reason).
    #[error("malformed head: {0}")]
    Syntax(&'static str),
    /// The head exceeds the configured size.
    #[error("head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// More header fields than the configured limit.
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    /// Both Content-Length and Transfer-Encoding (a smuggling vector).
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    /// Content-Length that is not a decimal number, or several that differ.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// Transfer-Encoding whose final coding is not `chunked`, or an unknown coding.
    #[error("unsupported Transfer-Encoding")]
    BadTransferEncoding,
    /// A malformed chunk-size line or chunk framing.
    #[error("malformed chunk: {0}")]
    BadChunk(&'static str),
    /// Only HTTP/1.0 and HTTP/1.1 are spoken on this path.
    #[error("unsupported HTTP version")]
    Version,
}

impl Error {
    /// The status code to answer with (then close the connection).
    pub fn status(&self) -> u16 {
        match self {
            Self::HeadTooLarge(_) | Self::TooManyHeaders(_) => 431,
            Self::Version => 505,
            _ => 400,
        }
    }

    /// A stable, low-cardinality label for metrics.
    pub fn as_label(&self) -> &'static str {
        match self {
            Self::Syntax(_) => "syntax",
            Self::HeadTooLarge(_) => "head_too_large",
            Self::TooManyHeaders(_) => "too_many_headers",
            Self::LengthAndChunked => "length_and_chunked",
            Self::BadContentLength => "bad_content_length",
            Self::BadTransferEncoding => "bad_transfer_encoding",
            Self::BadChunk(_) => "bad_chunk",
            Self::Version => "version",
        }
    }
}
