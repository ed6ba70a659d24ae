//! The clients file of `weir ca serve`: who may ask the CA for which SPIFFE IDs.
//!
//! ```toml
//! [[clients]]
//! name = "dpu0"
//! token_file = "dpu0.token"      # relative to this file; at least 32 characters
//! ids = ["spiffe://weir.local/ns/dpu/sa/plane", "spiffe://weir.local/ns/host/*"]
//! ```
//!
//! An ID is exact, or a path prefix ending in `/*` that matches whole segments only. Tokens
//! are kept as SHA-256 digests and compared in constant time.
use aws_lc_rs::{constant_time, digest};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use weir_identity::SpiffeId;

/// The shortest token accepted: 32 characters, e.g. `openssl rand -hex 16` (prefer `-hex 32`).
pub const MIN_TOKEN_CHARS: usize = 32;

/// Every client of one CA server.
#[derive(Debug)]
pub struct Clients {
    clients: Vec<Client>,
}

/// One client: its name (logs), its token's digest and what it may ask for.
#[derive(Debug)]
pub struct Client {
    /// Name, for logs and refusals.
    pub name: String,
    token: Token,
    /// The IDs it may ask for.
    pub ids: Vec<IdPattern>,
}

/// The SHA-256 digest of a client's token.
pub struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The digest of `secret`.
    pub fn of(secret: &str) -> Self {
        let d = digest::digest(&digest::SHA256, secret.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// Reads a token file: its text without surrounding whitespace, at least
    /// [`MIN_TOKEN_CHARS`] characters. The error names the file.
    pub fn read_secret(path: &Path) -> Result<String, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let secret = text.trim();
        if secret.chars().count() < MIN_TOKEN_CHARS {
            return Err(format!(
                "{}: the token is {} characters; at least {MIN_TOKEN_CHARS} are needed (make one with `openssl rand -hex 32`)",
                path.display(),
                secret.chars().count()
            ));
        }
        Ok(secret.to_owned())
    }

    /// Constant-time equality of two digests.
    fn matches(&self, other: &Token) -> bool {
        constant_time::verify_slices_are_equal(&self.0, &other.0).is_ok()
    }
}

/// An allowed SPIFFE ID: exact, or every ID under a path prefix (`…/ns/host/*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdPattern {
    /// This ID only.
    Exact(SpiffeId),
    /// IDs that start with this string, which ends in `/`: whole segments only, so
    /// `…/ns/host/` does not cover `…/ns/hostile/x`.
    Prefix(String),
}

impl IdPattern {
    /// Parses `spiffe://td/path` or `spiffe://td/path/*`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.strip_suffix("/*") {
            Some(base) => {
                let id: SpiffeId = base.parse().map_err(|e| format!("{s:?}: {base:?} is not a SPIFFE ID: {e}"))?;
                Ok(Self::Prefix(format!("{}/", id.as_str())))
            }
            None => s
                .parse()
                .map(Self::Exact)
                .map_err(|e| format!("{s:?} is not a SPIFFE ID or a prefix ending in /*: {e}")),
        }
    }

    /// Whether `id` is allowed by this pattern.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Exact(e) => e == id,
            Self::Prefix(p) => id.as_str().len() > p.len() && id.as_str().starts_with(p.as_str()),
        }
    }

    fn trust_domain(&self) -> &str {
        match self {
            Self::Exact(id) => id.trust_domain(),
            Self::Prefix(p) => p["spiffe://".len()..].split('/').next().unwrap_or(""),
        }
    }
}

impl std::fmt::Display for IdPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(id) => write!(f, "{id}"),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// A clients file that cannot be used: the file, the field and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: {field}: {reason}")]
pub struct ClientsError {
    /// The clients file.
    pub file: PathBuf,
    /// The field, e.g. `clients[1].token_file`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    clients: Vec<RawClient>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: String,
    token_file: PathBuf,
    ids: Vec<String>,
}

impl Clients {
    /// Reads and checks the clients file at `path` for a CA of `trust_domain`. Token files
    /// are read now; relative paths are relative to the clients file.
    pub fn load(path: &Path, trust_domain: &str) -> Result<Self, ClientsError> {
        let err = |field: &str, reason: String| ClientsError { file: path.to_owned(), field: field.to_owned(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| err("(file)", e.to_string()))?;
        let raw: RawFile = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let at = line.map_or_else(|| "(file)".to_owned(), |l| format!("line {l}"));
            err(&at, e.message().trim().to_owned())
        })?;
        if raw.clients.is_empty() {
            return Err(err("clients", "no [[clients]]: nobody could ask this CA for anything".into()));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut clients: Vec<Client> = Vec::new();
        for (n, c) in raw.clients.iter().enumerate() {
            let field = |f: &str| format!("clients[{n}].{f}");
            if c.name.trim().is_empty() {
                return Err(err(&field("name"), "empty".into()));
            }
            if clients.iter().any(|o| o.name == c.name) {
                return Err(err(&field("name"), format!("client {:?} is listed twice", c.name)));
            }
            let secret = Token::read_secret(&dir.join(&c.token_file)).map_err(|r| err(&field("token_file"), r))?;
            let token = Token::of(&secret);
            if let Some(o) = clients.iter().find(|o| o.token.matches(&token)) {
                return Err(err(
                    &field("token_file"),
                    format!("the same token as client {:?}: tokens must differ", o.name),
                ));
            }
            if c.ids.is_empty() {
                return Err(err(&field("ids"), "empty: the client could ask for nothing".into()));
            }
            let mut ids = Vec::new();
            for (k, s) in c.ids.iter().enumerate() {
                let p = IdPattern::parse(s).map_err(|r| err(&field(&format!("ids[{k}]")), r))?;
                if p.trust_domain() != trust_domain {
                    return Err(err(
                        &field(&format!("ids[{k}]")),
                        format!("{s:?} is not in trust domain {trust_domain}"),
                    ));
                }
                ids.push(p);
            }
            clients.push(Client { name: c.name.clone(), token, ids });
        }
        Ok(Self { clients })
    }

    /// The client holding `secret`, if any. Every client's digest is compared, so the time
    /// taken says nothing about which one (or whether one) matched.
    pub fn authenticate(&self, secret: &str) -> Option<&Client> {
        let token = Token::of(secret);
        let mut found = None;
        for c in &self.clients {
            if c.token.matches(&token) && found.is_none() {
                found = Some(c);
            }
        }
        found
    }

    /// How many clients there are.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// Whether there are none (never, for a loaded file).
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

impl Client {
    /// Whether this client may ask for `id`.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        self.ids.iter().any(|p| p.allows(id))
    }
}
