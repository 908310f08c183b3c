//! The hosts each Microsoft cloud uses (API-NOTES.md "Hosts per cloud"), and
//! what an endpoint URL must look like before a token or a secret goes to it.

use super::check::Checker;

/// The login host, API host and token scope of one cloud.
pub(super) struct Endpoints {
    pub(super) login_url: &'static str,
    pub(super) api_url: &'static str,
    pub(super) token_scope: &'static str,
    /// Microsoft Graph's host and its token scope (API-NOTES, the Graph table).
    pub(super) graph_url: &'static str,
    pub(super) graph_scope: &'static str,
}

/// The preset of `cloud` (`global`, `gcc`, `gcc-high`, `dod`).
pub(super) fn cloud_endpoints(cloud: &str) -> Option<Endpoints> {
    let (login_url, api_url, token_scope) = match cloud {
        "global" => (
            "https://login.microsoftonline.com",
            "https://api.securitycenter.microsoft.com",
            "https://api.securitycenter.microsoft.com/.default",
        ),
        "gcc" => (
            "https://login.microsoftonline.com",
            "https://api-gcc.securitycenter.microsoft.us",
            "https://api-gcc.securitycenter.microsoft.us/.default",
        ),
        "gcc-high" | "dod" => (
            "https://login.microsoftonline.us",
            "https://api-gov.securitycenter.microsoft.us",
            "https://api-gov.securitycenter.microsoft.us/.default",
        ),
        _ => return None,
    };
    let (graph_url, graph_scope) = match cloud {
        "gcc-high" => (
            "https://graph.microsoft.us",
            "https://graph.microsoft.us/.default",
        ),
        "dod" => (
            "https://dod-graph.microsoft.us",
            "https://dod-graph.microsoft.us/.default",
        ),
        _ => (
            "https://graph.microsoft.com",
            "https://graph.microsoft.com/.default",
        ),
    };
    Some(Endpoints {
        login_url,
        api_url,
        token_scope,
        graph_url,
        graph_scope,
    })
}

impl Checker<'_> {
    /// A URL the daemon sends tokens or secrets to: `https://`, or plain
    /// `http://` to a loopback host only (tests and the simulator). Returned
    /// without trailing slashes, since paths are appended to it.
    pub(super) fn endpoint(&mut self, key: &str, text: &str) -> Option<String> {
        let trimmed = text.trim().trim_end_matches('/');
        let url = match url::Url::parse(trimmed) {
            Ok(u) => u,
            Err(e) => {
                self.problem(key, format!("{text:?} is not a URL ({e})"));
                return None;
            }
        };
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => {
                self.problem(key, format!("{text:?} has no host"));
                return None;
            }
        };
        match url.scheme() {
            "https" => Some(trimmed.to_owned()),
            "http" if loopback => Some(trimmed.to_owned()),
            scheme => {
                self.problem(
                    key,
                    format!(
                        "{text:?} must be https:// (not {scheme}://); plain http:// is allowed only to a loopback host (127.0.0.1, ::1, localhost)"
                    ),
                );
                None
            }
        }
    }
}
