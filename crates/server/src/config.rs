//! Configuration: flags > environment > `.env` in the working directory > TOML file
//! (`--config`) > defaults.
//!
//! Every option is a flag and a `LOCKSERVER_*` variable (clap reads the real environment, so
//! flag > environment comes for free); the `.env` file and the TOML file fill what is still
//! unset, in that order. The seed's names are kept: `LOCKSERVER_SECRET`, `LOCKSERVER_BIND_IP`,
//! `LOCKSERVER_PORT` (alias `LOCKSERVER_HTTP_PORT`), `-b/--bind`, `-p/--port`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::Parser;
use serde::Deserialize;

/// Why the configuration cannot be used. The message is what the operator reads.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Flags(String),
    #[error("cannot read {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{source_name}: {key}={value:?} is not a valid value ({detail})")]
    Value { source_name: &'static str, key: String, value: String, detail: String },
    #[error(
        "refusing to listen on {bind} without a secret: anyone who can reach that address \
         could take and release every lock. Set LOCKSERVER_SECRET (or --secret), or bind to \
         a loopback address such as 127.0.0.1"
    )]
    InsecureBind { bind: IpAddr },
    #[error("{0}")]
    Invalid(String),
}

/// A credential. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(text: &str) -> Result<Secret, String> {
        if text.is_empty() {
            return Err("a secret must not be empty".into());
        }
        Ok(Secret(text.to_string()))
    }
}

/// Server-side limits; each is answered with `limit_exceeded` (or 413 for the body size).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ServerLimits {
    /// Names with holders, waiters or a lock-delay.
    pub max_names: usize,
    /// Holds plus waiting acquires, over all names.
    pub max_holds: usize,
    pub max_waiters_per_name: usize,
    pub max_sessions: usize,
    /// Open HTTP connections; one more is answered 429 and closed.
    pub max_connections: usize,
    /// Largest request body, in bytes (also the largest WebSocket message).
    pub max_body_bytes: usize,
    /// Most bytes of replies and events a streaming session may have waiting: unread by its
    /// client (over the limit, the connection is cut as too slow) or, while it is disconnected,
    /// buffered for replay (over the limit, the session ends).
    pub ws_max_buffer_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_names: 1_000_000,
            max_holds: 1_000_000,
            max_waiters_per_name: 10_000,
            max_sessions: 100_000,
            max_connections: 10_000,
            max_body_bytes: 64 * 1024,
            ws_max_buffer_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The compatibility surfaces that `--disable` can turn off.
pub const SURFACES: &[&str] = &["lockserver-http", "rdlm", "locker"];

/// The resolved configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub bind: IpAddr,
    /// 0 picks a free port; the start-up line and `--ready-file` give the one bound.
    pub port: u16,
    pub data_dir: PathBuf,
    pub in_memory: bool,
    pub secret: Option<Secret>,
    pub admin_secret: Option<Secret>,
    /// TTL of a hold acquired with neither `ttl_ms` nor a session.
    pub default_ttl_ms: u64,
    /// Longest `wait_ms` an HTTP acquire may ask for.
    pub max_wait_ms: u64,
    pub min_session_ttl_ms: u64,
    pub max_session_ttl_ms: u64,
    /// A streaming session's connection is pinged after this long without a frame from the
    /// client, and dropped (as half-open) after twice this long.
    pub ws_heartbeat_ms: u64,
    /// Compatibility surfaces turned off (see [`SURFACES`]).
    pub disabled: Vec<String>,
    /// The base of RDLM `Location` URLs (`http://host:port`); absent: from the Host header.
    pub public_url: Option<String>,
    /// RDLM lock routes without a credential even when a client secret is set (rdlm-py sends
    /// none). For trusted networks; announced at start-up.
    pub rdlm_open: bool,
    /// The locker protocol's listener (it has no authentication: loopback unless asked).
    pub locker_bind: IpAddr,
    /// 0 picks a free port.
    pub locker_port: u16,
    pub limits: ServerLimits,
    /// A tracing filter: `info`, `debug`, `lockserver_server=debug,info`, ...
    pub log_level: String,
    pub ready_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            data_dir: PathBuf::from("./lockserver-data"),
            in_memory: false,
            secret: None,
            admin_secret: None,
            default_ttl_ms: 60_000,
            max_wait_ms: 300_000,
            min_session_ttl_ms: 100,
            max_session_ttl_ms: 3_600_000,
            ws_heartbeat_ms: 5_000,
            disabled: Vec::new(),
            public_url: None,
            rdlm_open: false,
            locker_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            locker_port: 4545,
            limits: ServerLimits::default(),
            log_level: "info".into(),
            ready_file: None,
        }
    }
}

impl Config {
    /// Checks the rules that no single option can: the security default above all.
    /// Whether a compatibility surface is on.
    pub fn serves(&self, surface: &str) -> bool {
        !self.disabled.iter().any(|disabled| disabled == surface)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.secret.is_none() && !self.bind.is_loopback() {
            return Err(ConfigError::InsecureBind { bind: self.bind });
        }
        if self.min_session_ttl_ms == 0 || self.min_session_ttl_ms > self.max_session_ttl_ms {
            return Err(ConfigError::Invalid(
                "min-session-ttl-ms must be at least 1 and at most max-session-ttl-ms".into(),
            ));
        }
        if let Some(url) = &self.public_url {
            if !url.starts_with("http://") {
                return Err(ConfigError::Invalid(
                    "--public-url must start with http:// (RDLM clients speak plain HTTP)".into(),
                ));
            }
        }
        if self.ws_heartbeat_ms == 0 {
            return Err(ConfigError::Invalid("ws-heartbeat-ms must be at least 1".into()));
        }
        if self.default_ttl_ms == 0 {
            return Err(ConfigError::Invalid("default-ttl-ms must be at least 1".into()));
        }
        let limits = &self.limits;
        let all_positive = [
            limits.max_names,
            limits.max_holds,
            limits.max_waiters_per_name,
            limits.max_sessions,
            limits.max_connections,
            limits.max_body_bytes,
            limits.ws_max_buffer_bytes,
        ]
        .iter()
        .all(|limit| *limit > 0);
        if !all_positive {
            return Err(ConfigError::Invalid("every limit must be at least 1".into()));
        }
        Ok(())
    }

    /// Reads flags from `args` (the first item is the program name), the process environment,
    /// `.env` in `cwd` and the TOML file, in that order of precedence.
    pub fn load<I, T>(args: I, cwd: &Path) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let flags = Flags::try_parse_from(args)
            .map_err(|err| ConfigError::Flags(err.render().to_string()))?;
        let dotenv = read_dotenv(&cwd.join(".env"))?;
        let config_path = match flags.config.clone() {
            Some(path) => Some(path),
            None => dotenv_value::<PathBuf>(&dotenv, "LOCKSERVER_CONFIG")?,
        };
        let file = match &config_path {
            Some(path) => read_toml(path)?,
            None => FileConfig::default(),
        };
        Layers { dotenv: &dotenv }.resolve(flags, file)
    }
}

/// Flags, each also read from its `LOCKSERVER_*` variable.
#[derive(Parser, Debug, Default)]
#[command(
    name = "lockserver",
    version,
    about = "Lockserver: a distributed lock service (locks, semaphores, sessions, fencing tokens)",
    after_help = "Every option can also come from a LOCKSERVER_* environment variable (shown \
        beside it), a .env file in the working directory, or a TOML file given with --config \
        (keys are the option names with underscores, e.g. max_wait_ms = 1000). Precedence: \
        flags > environment > .env > config file > defaults.\n\nWithout a secret the server \
        listens on loopback only; binding elsewhere without LOCKSERVER_SECRET is refused."
)]
struct Flags {
    /// TOML configuration file.
    #[arg(long, env = "LOCKSERVER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// IP address to listen on [default: 127.0.0.1].
    #[arg(short = 'b', long, env = "LOCKSERVER_BIND_IP", value_name = "IP")]
    bind: Option<IpAddr>,
    /// HTTP port; 0 picks a free one [default: 8080] (LOCKSERVER_HTTP_PORT is an alias).
    #[arg(short = 'p', long, env = "LOCKSERVER_PORT", value_name = "PORT")]
    port: Option<u16>,
    /// Where the log and snapshots live [default: ./lockserver-data].
    #[arg(long, env = "LOCKSERVER_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the lock table in memory only: no log, no fsync (tokens still never go back).
    #[arg(long, env = "LOCKSERVER_IN_MEMORY", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true")]
    in_memory: Option<bool>,
    /// Client secret (prefer the environment: flags show in `ps`).
    #[arg(long, env = "LOCKSERVER_SECRET", value_name = "SECRET", hide_env_values = true)]
    secret: Option<Secret>,
    /// Admin secret for /v1/admin/*; without it admin routes answer 403.
    #[arg(long, env = "LOCKSERVER_ADMIN_SECRET", value_name = "SECRET", hide_env_values = true)]
    admin_secret: Option<Secret>,
    /// TTL of a hold acquired without ttl_ms and without a session [default: 60000].
    #[arg(long, env = "LOCKSERVER_DEFAULT_TTL_MS", value_name = "MS")]
    default_ttl_ms: Option<u64>,
    /// Longest wait_ms an HTTP acquire may ask for [default: 300000].
    #[arg(long, env = "LOCKSERVER_MAX_WAIT_MS", value_name = "MS")]
    max_wait_ms: Option<u64>,
    /// Shortest session ttl_ms [default: 100].
    #[arg(long, env = "LOCKSERVER_MIN_SESSION_TTL_MS", value_name = "MS")]
    min_session_ttl_ms: Option<u64>,
    /// Longest session ttl_ms [default: 3600000].
    #[arg(long, env = "LOCKSERVER_MAX_SESSION_TTL_MS", value_name = "MS")]
    max_session_ttl_ms: Option<u64>,
    /// Most names with holders or waiters [default: 1000000].
    #[arg(long, env = "LOCKSERVER_MAX_NAMES", value_name = "N")]
    max_names: Option<usize>,
    /// Most holds plus waiting acquires, over all names [default: 1000000].
    #[arg(long, env = "LOCKSERVER_MAX_HOLDS", value_name = "N")]
    max_holds: Option<usize>,
    /// Most waiters on one name [default: 10000].
    #[arg(long, env = "LOCKSERVER_MAX_WAITERS_PER_NAME", value_name = "N")]
    max_waiters_per_name: Option<usize>,
    /// Most live sessions [default: 100000].
    #[arg(long, env = "LOCKSERVER_MAX_SESSIONS", value_name = "N")]
    max_sessions: Option<usize>,
    /// Most open HTTP connections [default: 10000].
    #[arg(long, env = "LOCKSERVER_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Largest request body in bytes [default: 65536].
    #[arg(long, env = "LOCKSERVER_MAX_BODY_BYTES", value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// Ping a streaming session's connection after this long without a frame from its
    /// client; drop it as half-open after twice this long [default: 5000].
    #[arg(long, env = "LOCKSERVER_WS_HEARTBEAT_MS", value_name = "MS")]
    ws_heartbeat_ms: Option<u64>,
    /// Most bytes of replies and events a streaming session may have waiting: unread by a slow
    /// client (then it is disconnected) or buffered while it is disconnected (then the session
    /// ends) [default: 8388608].
    #[arg(long, env = "LOCKSERVER_WS_MAX_BUFFER_BYTES", value_name = "BYTES")]
    ws_max_buffer_bytes: Option<usize>,
    /// Compatibility surfaces to turn off, comma-separated: lockserver-http (the original
    /// Lockserver's POST /acquire and /release), rdlm (the RDLM REST API), locker (the locker
    /// TCP protocol) [default: none].
    #[arg(long, env = "LOCKSERVER_DISABLE", value_name = "LIST")]
    disable: Option<String>,
    /// Base URL of RDLM Location headers, e.g. http://locks.example:8080 [default: from the
    /// request's Host header].
    #[arg(long, env = "LOCKSERVER_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// Serve the RDLM lock routes without a credential even when a client secret is set
    /// (rdlm-py sends none; trusted networks only).
    #[arg(long, env = "LOCKSERVER_RDLM_OPEN", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true")]
    rdlm_open: Option<bool>,
    /// Address of the locker protocol's listener; it has no authentication [default:
    /// 127.0.0.1].
    #[arg(long, env = "LOCKSERVER_LOCKER_BIND", value_name = "IP")]
    locker_bind: Option<IpAddr>,
    /// Port of the locker protocol's listener; 0 picks a free one [default: 4545].
    #[arg(long, env = "LOCKSERVER_LOCKER_PORT", value_name = "PORT")]
    locker_port: Option<u16>,
    /// No locker listener (the same as --disable locker).
    #[arg(long)]
    no_locker: bool,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive [default: info].
    #[arg(long, env = "LOCKSERVER_LOG_LEVEL", value_name = "LEVEL")]
    log_level: Option<String>,
    /// Write the bound addresses to this file once the server is ready.
    #[arg(long, env = "LOCKSERVER_READY_FILE", value_name = "FILE")]
    ready_file: Option<PathBuf>,
}

/// The TOML file: the same options, snake_case keys.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<IpAddr>,
    port: Option<u16>,
    data_dir: Option<PathBuf>,
    in_memory: Option<bool>,
    secret: Option<String>,
    admin_secret: Option<String>,
    default_ttl_ms: Option<u64>,
    max_wait_ms: Option<u64>,
    min_session_ttl_ms: Option<u64>,
    max_session_ttl_ms: Option<u64>,
    max_names: Option<usize>,
    max_holds: Option<usize>,
    max_waiters_per_name: Option<usize>,
    max_sessions: Option<usize>,
    max_connections: Option<usize>,
    max_body_bytes: Option<usize>,
    ws_heartbeat_ms: Option<u64>,
    ws_max_buffer_bytes: Option<usize>,
    disable: Option<String>,
    public_url: Option<String>,
    rdlm_open: Option<bool>,
    locker_bind: Option<IpAddr>,
    locker_port: Option<u16>,
    log_level: Option<String>,
    ready_file: Option<PathBuf>,
}

fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let mut values = HashMap::new();
    let iter = match dotenvy::from_path_iter(path) {
        Ok(iter) => iter,
        Err(dotenvy::Error::Io(err)) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(values)
        }
        Err(err) => {
            return Err(ConfigError::Read { path: path.to_path_buf(), detail: err.to_string() })
        }
    };
    for item in iter {
        let (key, value) = item.map_err(|err| ConfigError::Parse {
            path: path.to_path_buf(),
            detail: err.to_string(),
        })?;
        if key.starts_with("LOCKSERVER_") {
            values.insert(key, value);
        }
    }
    Ok(values)
}

fn read_toml(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| ConfigError::Read { path: path.to_path_buf(), detail: err.to_string() })?;
    toml::from_str(&text)
        .map_err(|err| ConfigError::Parse { path: path.to_path_buf(), detail: err.to_string() })
}

fn dotenv_value<T: FromStr>(
    dotenv: &HashMap<String, String>,
    key: &str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: fmt::Display,
{
    let Some(text) = dotenv.get(key) else {
        return Ok(None);
    };
    text.parse().map(Some).map_err(|err: T::Err| ConfigError::Value {
        source_name: ".env",
        key: key.to_string(),
        value: text.clone(),
        detail: err.to_string(),
    })
}

fn parse_surfaces(list: &str) -> Result<Vec<String>, ConfigError> {
    let mut surfaces = Vec::new();
    for surface in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !SURFACES.contains(&surface) {
            return Err(ConfigError::Invalid(format!(
                "--disable: unknown surface {surface:?} (known: {})",
                SURFACES.join(", ")
            )));
        }
        surfaces.push(surface.to_string());
    }
    Ok(surfaces)
}

/// `.env` only knows strings; `in_memory` also takes the usual yes/no words.
fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

struct Layers<'a> {
    dotenv: &'a HashMap<String, String>,
}

impl Layers<'_> {
    /// The value from the flag/environment, else `.env`, else the file.
    fn pick<T: FromStr>(
        &self,
        flag: Option<T>,
        key: &str,
        file: Option<T>,
    ) -> Result<Option<T>, ConfigError>
    where
        T::Err: fmt::Display,
    {
        if flag.is_some() {
            return Ok(flag);
        }
        if let Some(value) = dotenv_value(self.dotenv, key)? {
            return Ok(Some(value));
        }
        Ok(file)
    }

    /// A yes/no option: the flag/environment, else `.env` (which also takes yes/no words),
    /// else the file.
    fn pick_bool(
        &self,
        flag: Option<bool>,
        key: &str,
        file: Option<bool>,
    ) -> Result<Option<bool>, ConfigError> {
        if flag.is_some() {
            return Ok(flag);
        }
        match self.dotenv.get(key) {
            Some(text) => parse_bool(text).map(Some).map_err(|detail| ConfigError::Value {
                source_name: ".env",
                key: key.into(),
                value: text.clone(),
                detail,
            }),
            None => Ok(file),
        }
    }

    fn resolve(&self, flags: Flags, file: FileConfig) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        let limit_defaults = ServerLimits::default();
        let env_port_alias = match std::env::var("LOCKSERVER_HTTP_PORT") {
            Ok(text) => Some(text.parse::<u16>().map_err(|err| ConfigError::Value {
                source_name: "environment",
                key: "LOCKSERVER_HTTP_PORT".into(),
                value: text.clone(),
                detail: err.to_string(),
            })?),
            Err(_) => None,
        };
        let port_flag = match flags.port.or(env_port_alias) {
            Some(port) => Some(port),
            None => dotenv_value(self.dotenv, "LOCKSERVER_HTTP_PORT")?,
        };
        let in_memory = self.pick_bool(flags.in_memory, "LOCKSERVER_IN_MEMORY", file.in_memory)?;
        let file_secret =
            |value: Option<String>, key: &str| -> Result<Option<Secret>, ConfigError> {
                value
                    .map(|text| {
                        text.parse::<Secret>().map_err(|detail| ConfigError::Value {
                            source_name: "config file",
                            key: key.into(),
                            value: "<redacted>".into(),
                            detail,
                        })
                    })
                    .transpose()
            };
        let config = Config {
            bind: self.pick(flags.bind, "LOCKSERVER_BIND_IP", file.bind)?.unwrap_or(defaults.bind),
            port: self.pick(port_flag, "LOCKSERVER_PORT", file.port)?.unwrap_or(defaults.port),
            data_dir: self
                .pick(flags.data_dir, "LOCKSERVER_DATA_DIR", file.data_dir)?
                .unwrap_or(defaults.data_dir),
            in_memory: in_memory.unwrap_or(defaults.in_memory),
            secret: self.pick(
                flags.secret,
                "LOCKSERVER_SECRET",
                file_secret(file.secret, "secret")?,
            )?,
            admin_secret: self.pick(
                flags.admin_secret,
                "LOCKSERVER_ADMIN_SECRET",
                file_secret(file.admin_secret, "admin_secret")?,
            )?,
            default_ttl_ms: self
                .pick(flags.default_ttl_ms, "LOCKSERVER_DEFAULT_TTL_MS", file.default_ttl_ms)?
                .unwrap_or(defaults.default_ttl_ms),
            max_wait_ms: self
                .pick(flags.max_wait_ms, "LOCKSERVER_MAX_WAIT_MS", file.max_wait_ms)?
                .unwrap_or(defaults.max_wait_ms),
            min_session_ttl_ms: self
                .pick(
                    flags.min_session_ttl_ms,
                    "LOCKSERVER_MIN_SESSION_TTL_MS",
                    file.min_session_ttl_ms,
                )?
                .unwrap_or(defaults.min_session_ttl_ms),
            max_session_ttl_ms: self
                .pick(
                    flags.max_session_ttl_ms,
                    "LOCKSERVER_MAX_SESSION_TTL_MS",
                    file.max_session_ttl_ms,
                )?
                .unwrap_or(defaults.max_session_ttl_ms),
            ws_heartbeat_ms: self
                .pick(flags.ws_heartbeat_ms, "LOCKSERVER_WS_HEARTBEAT_MS", file.ws_heartbeat_ms)?
                .unwrap_or(defaults.ws_heartbeat_ms),
            disabled: {
                let list = self.pick(flags.disable, "LOCKSERVER_DISABLE", file.disable)?;
                let mut disabled = parse_surfaces(&list.unwrap_or_default())?;
                if flags.no_locker && !disabled.iter().any(|surface| surface == "locker") {
                    disabled.push("locker".into());
                }
                disabled
            },
            public_url: self.pick(flags.public_url, "LOCKSERVER_PUBLIC_URL", file.public_url)?,
            rdlm_open: self
                .pick_bool(flags.rdlm_open, "LOCKSERVER_RDLM_OPEN", file.rdlm_open)?
                .unwrap_or(defaults.rdlm_open),
            locker_bind: self
                .pick(flags.locker_bind, "LOCKSERVER_LOCKER_BIND", file.locker_bind)?
                .unwrap_or(defaults.locker_bind),
            locker_port: self
                .pick(flags.locker_port, "LOCKSERVER_LOCKER_PORT", file.locker_port)?
                .unwrap_or(defaults.locker_port),
            limits: ServerLimits {
                max_names: self
                    .pick(flags.max_names, "LOCKSERVER_MAX_NAMES", file.max_names)?
                    .unwrap_or(limit_defaults.max_names),
                max_holds: self
                    .pick(flags.max_holds, "LOCKSERVER_MAX_HOLDS", file.max_holds)?
                    .unwrap_or(limit_defaults.max_holds),
                max_waiters_per_name: self
                    .pick(
                        flags.max_waiters_per_name,
                        "LOCKSERVER_MAX_WAITERS_PER_NAME",
                        file.max_waiters_per_name,
                    )?
                    .unwrap_or(limit_defaults.max_waiters_per_name),
                max_sessions: self
                    .pick(flags.max_sessions, "LOCKSERVER_MAX_SESSIONS", file.max_sessions)?
                    .unwrap_or(limit_defaults.max_sessions),
                max_connections: self
                    .pick(
                        flags.max_connections,
                        "LOCKSERVER_MAX_CONNECTIONS",
                        file.max_connections,
                    )?
                    .unwrap_or(limit_defaults.max_connections),
                max_body_bytes: self
                    .pick(flags.max_body_bytes, "LOCKSERVER_MAX_BODY_BYTES", file.max_body_bytes)?
                    .unwrap_or(limit_defaults.max_body_bytes),
                ws_max_buffer_bytes: self
                    .pick(
                        flags.ws_max_buffer_bytes,
                        "LOCKSERVER_WS_MAX_BUFFER_BYTES",
                        file.ws_max_buffer_bytes,
                    )?
                    .unwrap_or(limit_defaults.ws_max_buffer_bytes),
            },
            log_level: self
                .pick(flags.log_level, "LOCKSERVER_LOG_LEVEL", file.log_level)?
                .unwrap_or(defaults.log_level),
            ready_file: self.pick(flags.ready_file, "LOCKSERVER_READY_FILE", file.ready_file)?,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_in(dir: &Path, args: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["lockserver"];
        argv.extend_from_slice(args);
        Config::load(argv, dir)
    }

    // These tests never set process variables (tests run in parallel threads); the
    // environment layer is covered by the binary's integration tests.

    #[test]
    fn flags_beat_dotenv_which_beats_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("lockserver.toml"),
            "port = 7001\nmax_wait_ms = 1234\ndefault_ttl_ms = 99\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".env"), "LOCKSERVER_MAX_WAIT_MS=4321\nOTHER=1\n").unwrap();
        let toml_path = dir.path().join("lockserver.toml");
        let config =
            load_in(dir.path(), &["--config", toml_path.to_str().unwrap(), "--port", "7002"])
                .unwrap();
        assert_eq!(config.port, 7002, "flag over file");
        assert_eq!(config.max_wait_ms, 4321, ".env over file");
        assert_eq!(config.default_ttl_ms, 99, "file over default");
        assert_eq!(config.limits.max_sessions, ServerLimits::default().max_sessions);
    }

    #[test]
    fn http_port_alias_in_dotenv_and_in_memory_words() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "LOCKSERVER_HTTP_PORT=7100\nLOCKSERVER_IN_MEMORY=yes\n",
        )
        .unwrap();
        let config = load_in(dir.path(), &[]).unwrap();
        assert_eq!(config.port, 7100);
        assert!(config.in_memory);
    }

    #[test]
    fn non_loopback_bind_without_secret_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_in(dir.path(), &["--bind", "0.0.0.0"]).unwrap_err();
        assert!(matches!(err, ConfigError::InsecureBind { .. }));
        assert!(err.to_string().contains("LOCKSERVER_SECRET"), "{err}");
        let ok = load_in(dir.path(), &["--bind", "0.0.0.0", "--secret", "s3cret"]).unwrap();
        assert_eq!(ok.bind.to_string(), "0.0.0.0");
        assert!(!format!("{ok:?}").contains("s3cret"), "Debug must not show secrets");
    }

    #[test]
    fn unknown_toml_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "prot = 1\n").unwrap();
        assert!(matches!(
            load_in(dir.path(), &["--config", path.to_str().unwrap()]),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::write(dir.path().join(".env"), "LOCKSERVER_PORT=http\n").unwrap();
        assert!(matches!(load_in(dir.path(), &[]), Err(ConfigError::Value { .. })));
        assert!(matches!(load_in(dir.path(), &["--port", "99999"]), Err(ConfigError::Flags(_))));
    }
}
