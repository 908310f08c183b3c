//! The client side of a simulated world: a real `config.toml` (and its secret
//! file) pointing mde-poller at this simulator. `demo`, the integration tests
//! and the benchmark all write their config here, so they drive the real
//! config loader the same way.

use std::io;
use std::path::{Path, PathBuf};

/// What goes into the config; every field has the value most callers want.
#[derive(Debug, Clone)]
pub struct ClientConfig<'a> {
    pub client_id: &'a str,
    /// Written to `client-secret` (mode 0600) beside the config.
    pub secret: &'a str,
    /// The body of the `[poll]` table.
    pub poll: &'a str,
    /// `output.path`: `-` for stdout, or a file relative to the config.
    pub output: &'a str,
    pub log_level: &'a str,
    pub log_format: &'a str,
    /// More TOML, placed before the tenants (e.g. an `[http]` table).
    pub extra: &'a str,
    /// `(name, tenant id)` of each `[tenants.NAME]` table.
    pub tenants: &'a [(String, String)],
    /// Also writes `graph_url` (the simulator) into `[endpoints]`, for configs
    /// with Graph tenants (`source = "graph"` goes into `poll` or a tenant).
    pub graph: bool,
}

impl Default for ClientConfig<'_> {
    fn default() -> Self {
        ClientConfig {
            client_id: "",
            secret: "",
            poll: "",
            output: "alerts.ndjson",
            log_level: "info",
            log_format: "json",
            extra: "",
            tenants: &[],
            graph: false,
        }
    }
}

impl super::Simulator {
    /// Writes `dir/client-secret` and `dir/config.toml` for `c`, pointing both
    /// the login and the API URL at this simulator; returns the config path.
    pub fn write_client_config(&self, dir: &Path, c: &ClientConfig) -> io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let secret = dir.join("client-secret");
        std::fs::write(&secret, c.secret)?;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
        let url = self.url();
        let mut text = format!(
            "# Points mde-poller at the simulator on {url}.\n\
             cloud = \"global\"\n\
             [app]\nclient_id = \"{}\"\nclient_secret_file = \"client-secret\"\n\
             [endpoints]\nlogin_url = \"{url}\"\napi_url = \"{url}\"\n{}\
             [poll]\n{}\n\
             [store]\npath = \"state.db\"\n\
             [output]\npath = \"{}\"\n\
             [log]\nlevel = \"{}\"\nformat = \"{}\"\n\
             {}\n",
            c.client_id,
            if c.graph {
                format!("graph_url = \"{url}\"\n")
            } else {
                String::new()
            },
            c.poll,
            c.output,
            c.log_level,
            c.log_format,
            c.extra
        );
        for (name, id) in c.tenants {
            text.push_str(&format!("[tenants.{name}]\ntenant_id = \"{id}\"\n"));
        }
        let path = dir.join("config.toml");
        std::fs::write(&path, text)?;
        Ok(path)
    }
}
