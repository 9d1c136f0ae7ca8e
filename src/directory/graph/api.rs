//! Authenticated Graph requests: the access token on every request, one
//! renewal and retry when Graph rejects the token, advanced-query headers,
//! paging, and the classification of refusals.

use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use url::Url;

use super::error::{GraphError, Permission};
use super::token::{Tokens, is_token_rejected};
use super::transport::{Reply, Transport, origin};

/// One page of a collection.
pub(crate) struct Page {
    pub items: Vec<Map<String, Value>>,
    /// `@odata.nextLink`: more pages follow.
    pub next: Option<Url>,
    /// `@odata.deltaLink` (delta queries): the round is complete.
    pub delta: Option<Url>,
}

/// A request's options besides its URL.
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    /// What the request does, for messages: "reading users".
    pub what: &'a str,
    /// The permission a 403 points the admin to.
    pub permission: Permission,
    /// An advanced query: send `ConsistencyLevel: eventual`.
    pub advanced: bool,
}

/// Requests in flight at once over the whole source, whatever number of
/// reads run on it: Graph throttles per app and tenant, so more buys nothing.
const MAX_IN_FLIGHT: usize = 8;

/// Graph at one endpoint, as one app.
pub(crate) struct Api {
    transport: Transport,
    tokens: Tokens,
    base: Url,
    in_flight: Semaphore,
}

impl Api {
    pub(crate) fn new(transport: Transport, tokens: Tokens, base: Url) -> Self {
        Self {
            transport,
            tokens,
            base,
            in_flight: Semaphore::new(MAX_IN_FLIGHT),
        }
    }

    /// Throttling seen so far.
    pub(crate) fn throttling(&self) -> super::transport::Throttling {
        self.transport.throttling()
    }

    /// The backoff before asking again after `attempt` unanswered attempts.
    pub(crate) fn backoff(&self, attempt: u32) -> std::time::Duration {
        self.transport.backoff(attempt)
    }

    /// A URL below the `/v1.0/` base, e.g. `users`.
    pub(crate) fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path()));
        url
    }

    /// Whether `url` (a next or delta link from an answer) points into this
    /// Graph endpoint. The bearer token is only ever sent there.
    pub(crate) fn is_own(&self, url: &Url) -> bool {
        url.origin() == self.base.origin() && url.path().starts_with(self.base.path())
    }

    /// Send a request with the current token. A 401 renews the token and sends
    /// the request once more; a second 401 is `AuthFailed`. Other statuses are
    /// returned for the caller.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        call: Call<'_>,
    ) -> Result<Reply, GraphError> {
        if !self.is_own(url) {
            return Err(GraphError::read_failed(
                call.what,
                format!(
                    "Graph pointed to {}, outside {}; not following it",
                    origin(url),
                    self.base
                ),
            ));
        }
        // Held across retries: a throttled request keeps its place, so
        // backing off slows the whole source down, as Graph asks.
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| GraphError::read_failed(call.what, "the source is shutting down"))?;
        let mut renewed = false;
        loop {
            let token = self.tokens.get(&self.transport).await?;
            let build = || {
                let mut request = self
                    .transport
                    .client()
                    .request(method.clone(), url.clone())
                    .bearer_auth(token.value.expose())
                    .header(reqwest::header::ACCEPT, "application/json");
                if call.advanced {
                    request = request.header("ConsistencyLevel", "eventual");
                }
                if let Some(body) = body {
                    request = request.json(body);
                }
                request
            };
            let reply = self.transport.send(call.what, url, build).await?;
            if reply.status == StatusCode::FORBIDDEN {
                // A token carries the permissions granted when it was issued:
                // once the admin grants the one missing, only a new token has
                // it. The next operation asks for one rather than keep failing
                // on this one until it expires.
                self.tokens.invalidate(token.generation).await;
            }
            if !is_token_rejected(reply.status) {
                return Ok(reply);
            }
            self.tokens.invalidate(token.generation).await;
            if renewed {
                return Err(GraphError::AuthFailed {
                    endpoint: origin(url),
                    detail: format!(
                        "Microsoft Graph rejected a freshly issued token for {}: {}",
                        call.what,
                        reply.describe()
                    ),
                });
            }
            tracing::debug!(
                what = call.what,
                "Graph rejected the token; renewing it once"
            );
            renewed = true;
        }
    }

    /// GET a JSON resource; any status but success is an error.
    pub(crate) async fn get_json(&self, url: &Url, call: Call<'_>) -> Result<Value, GraphError> {
        let reply = self.send(Method::GET, url, None, call).await?;
        if !reply.status.is_success() {
            return Err(refusal(&reply, call));
        }
        reply.json(call.what)
    }

    /// POST a JSON body and read the JSON answer; any status but success is an error.
    pub(crate) async fn post_json(
        &self,
        url: &Url,
        body: &Value,
        call: Call<'_>,
    ) -> Result<Reply, GraphError> {
        self.send(Method::POST, url, Some(body), call).await
    }

    /// GET one page of a collection.
    pub(crate) async fn page(&self, url: &Url, call: Call<'_>) -> Result<Page, GraphError> {
        let value = self.get_json(url, call).await?;
        parse_page(value, call.what)
    }

    /// Every item of a collection, page by page, handed to `each` as it
    /// arrives (so a read holds one page of raw JSON at a time).
    pub(crate) async fn for_each(
        &self,
        first: Url,
        call: Call<'_>,
        mut each: impl FnMut(Map<String, Value>) -> Result<(), GraphError>,
    ) -> Result<(), GraphError> {
        let mut followed = FollowedLinks::starting_at(&first);
        let mut url = first;
        loop {
            let page = self.page(&url, call).await?;
            for item in page.items {
                each(item)?;
            }
            match page.next {
                Some(next) => {
                    followed.follow(&next, call.what)?;
                    url = next;
                }
                None => return Ok(()),
            }
        }
    }
}

/// The pages one listing has read, by link: a link met again means the pages
/// go round in a cycle, which would never end. Kept as digests, so an endless
/// chain of long links costs 32 bytes a page (the read budget ends it).
pub(crate) struct FollowedLinks {
    seen: HashSet<[u8; 32]>,
}

impl FollowedLinks {
    /// A listing that starts at `first`.
    pub(crate) fn starting_at(first: &Url) -> Self {
        let mut seen = HashSet::new();
        seen.insert(digest(first));
        Self { seen }
    }

    /// Record that the listing goes on to `next`; a [`GraphError::LinkCycle`]
    /// when it was read before.
    pub(crate) fn follow(&mut self, next: &Url, what: &str) -> Result<(), GraphError> {
        if self.seen.insert(digest(next)) {
            return Ok(());
        }
        Err(GraphError::LinkCycle {
            what: what.to_owned(),
            pages: self.seen.len() as u64,
        })
    }
}

fn digest(url: &Url) -> [u8; 32] {
    Sha256::digest(url.as_str().as_bytes()).into()
}

/// A page's items and links.
pub(crate) fn parse_page(value: Value, what: &str) -> Result<Page, GraphError> {
    let Value::Object(mut object) = value else {
        return Err(GraphError::read_failed(
            what,
            "the answer is not a JSON object",
        ));
    };
    let link = |object: &mut Map<String, Value>, key: &str| -> Result<Option<Url>, GraphError> {
        match object.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Url::parse(&s)
                .map(Some)
                .map_err(|e| GraphError::read_failed(what, format!("{key} is not a URL: {e}"))),
            Some(_) => Err(GraphError::read_failed(
                what,
                format!("{key} is not a string"),
            )),
        }
    };
    let next = link(&mut object, "@odata.nextLink")?;
    let delta = link(&mut object, "@odata.deltaLink")?;
    let items = match object.remove("value") {
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::Object(map) => Ok(map),
                _ => Err(GraphError::read_failed(
                    what,
                    "a collection item is not an object",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(GraphError::read_failed(
                what,
                "the answer has no \"value\" collection",
            ));
        }
    };
    Ok(Page { items, next, delta })
}

/// A refusal in the fixed set of reasons.
pub(crate) fn refusal(reply: &Reply, call: Call<'_>) -> GraphError {
    let detail = reply.describe();
    match reply.status {
        StatusCode::FORBIDDEN => GraphError::Forbidden {
            what: call.what.to_owned(),
            permission: call.permission,
            detail,
        },
        StatusCode::UNAUTHORIZED => GraphError::AuthFailed {
            endpoint: "Microsoft Graph".into(),
            detail: format!("{}: {detail}", call.what),
        },
        _ => GraphError::read_failed(call.what, detail),
    }
}

/// An OData string literal: quoted, with quotes doubled.
pub(crate) fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_yield_items_and_links() {
        let page = parse_page(
            serde_json::json!({
                "@odata.context": "x",
                "@odata.nextLink": "https://graph.microsoft.com/v1.0/users?$skiptoken=abc",
                "value": [{"id": "1"}, {"id": "2"}]
            }),
            "reading users",
        )
        .unwrap();
        assert_eq!(page.items.len(), 2);
        assert!(page.next.is_some());
        assert!(page.delta.is_none());
        assert!(parse_page(serde_json::json!({"value": 3}), "x").is_err());
        assert!(parse_page(serde_json::json!([]), "x").is_err());
    }

    #[test]
    fn a_link_met_again_is_a_cycle_and_new_links_are_not() {
        let link = |n: u32| {
            Url::parse(&format!(
                "https://graph.microsoft.com/v1.0/users?$skiptoken={n}"
            ))
            .unwrap()
        };
        let mut followed = FollowedLinks::starting_at(&link(0));
        for n in 1..100 {
            followed.follow(&link(n), "reading users").unwrap();
        }
        // Back to the first page, or to any page read since.
        for n in [0, 50] {
            let mut again = FollowedLinks {
                seen: followed.seen.clone(),
            };
            assert_eq!(
                again.follow(&link(n), "reading users"),
                Err(GraphError::LinkCycle {
                    what: "reading users".into(),
                    pages: 100
                })
            );
        }
    }

    #[test]
    fn odata_strings_double_their_quotes() {
        assert_eq!(odata_string("O'Neil"), "'O''Neil'");
    }
}
