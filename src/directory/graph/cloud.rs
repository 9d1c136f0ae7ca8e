//! The national clouds Entra ID runs in, and the login and Graph hosts of each.

use url::Url;

/// The national cloud a tenant lives in. It chooses the login (token) host and
/// the Microsoft Graph host; both can be overridden in the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Cloud {
    /// The global service.
    #[default]
    Global,
    /// Azure US Government (L4).
    UsGov,
    /// Azure US Government, Department of Defense (L5).
    UsGovDod,
    /// Azure operated by 21Vianet.
    China,
}

impl Cloud {
    /// The host of the cloud's Microsoft identity platform token endpoints.
    pub fn login_host(self) -> &'static str {
        match self {
            Cloud::Global => "login.microsoftonline.com",
            Cloud::UsGov | Cloud::UsGovDod => "login.microsoftonline.us",
            Cloud::China => "login.chinacloudapi.cn",
        }
    }

    /// The host of the cloud's Microsoft Graph service.
    pub fn graph_host(self) -> &'static str {
        match self {
            Cloud::Global => "graph.microsoft.com",
            Cloud::UsGov => "graph.microsoft.us",
            Cloud::UsGovDod => "dod-graph.microsoft.us",
            Cloud::China => "microsoftgraph.chinacloudapi.cn",
        }
    }

    /// `https://<login host>`: where tokens come from unless overridden.
    pub fn authority(self) -> Url {
        https(self.login_host())
    }

    /// `https://<graph host>`: where the directory is read unless overridden.
    pub fn graph(self) -> Url {
        https(self.graph_host())
    }

    /// The OAuth2 scope of an app-only token for the cloud's Graph:
    /// `https://<graph host>/.default`. It names the resource, so it stays the
    /// cloud's even when the Graph host is overridden (a private endpoint or a
    /// proxy still serves tokens issued for Graph).
    pub fn graph_scope(self) -> String {
        format!("https://{}/.default", self.graph_host())
    }
}

fn https(host: &str) -> Url {
    // The hosts are constants above; a parse failure is a bug caught by the tests.
    Url::parse(&format!("https://{host}/")).expect("a cloud host forms a valid URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cloud_has_its_login_and_graph_hosts() {
        let table = [
            (
                Cloud::Global,
                "login.microsoftonline.com",
                "graph.microsoft.com",
            ),
            (
                Cloud::UsGov,
                "login.microsoftonline.us",
                "graph.microsoft.us",
            ),
            (
                Cloud::UsGovDod,
                "login.microsoftonline.us",
                "dod-graph.microsoft.us",
            ),
            (
                Cloud::China,
                "login.chinacloudapi.cn",
                "microsoftgraph.chinacloudapi.cn",
            ),
        ];
        for (cloud, login, graph) in table {
            assert_eq!(cloud.login_host(), login);
            assert_eq!(cloud.graph_host(), graph);
            assert_eq!(cloud.authority().as_str(), format!("https://{login}/"));
            assert_eq!(cloud.graph().as_str(), format!("https://{graph}/"));
            assert_eq!(cloud.graph_scope(), format!("https://{graph}/.default"));
        }
    }

    #[test]
    fn the_default_cloud_is_global() {
        assert_eq!(Cloud::default(), Cloud::Global);
    }
}
