//! The client's IP: the peer address, or the `X-Forwarded-For` entry a trusted proxy added.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

/// The client address the rate limits count against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// Walks `X-Forwarded-For` from the right while the hop is a trusted proxy; the first
    /// untrusted hop is the client. Untrusted peers' headers are ignored entirely.
    pub fn resolve(req: &HttpRequest, trusted: &[IpNet]) -> Self {
        let peer = req
            .peer_addr()
            .map(|a| a.ip())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        Self(from_chain(peer, forwarded_for(req).as_deref(), trusted))
    }
}

impl ClientIp {
    /// What the rate limits count against: an IPv4 address as it is, an IPv6 one by its /64
    /// (one subscriber's network: a client there can pick any of its 2^64 addresses), an
    /// IPv4-mapped IPv6 address as the IPv4 address it maps.
    pub fn limit_key(&self) -> String {
        match self.0 {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
        }
    }
}

impl actix_web::FromRequest for ClientIp {
    type Error = crate::error::ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(
            super::session::app_state(req)
                .map(|state| Self::resolve(req, &state.settings.server.trusted_proxies)),
        )
    }
}

fn forwarded_for(req: &HttpRequest) -> Option<String> {
    let values: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

fn from_chain(peer: IpAddr, xff: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in xff.unwrap_or("").rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // A garbled entry: stop at the last address we could trust.
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            from_chain(ip("203.0.113.9"), Some("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client forged the first entry; the proxy appended the real one.
        let chain = "6.6.6.6, 198.51.100.7, 10.0.0.2";
        assert_eq!(
            from_chain(ip("10.0.0.1"), Some(chain), &trusted),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a = ClientIp(ip("2001:db8:1:2:aaaa::1")).limit_key();
        let b = ClientIp(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")).limit_key();
        let other = ClientIp(ip("2001:db8:1:3::1")).limit_key();
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(ClientIp(ip("::ffff:192.0.2.7")).limit_key(), "192.0.2.7");
        assert_eq!(ClientIp(ip("192.0.2.7")).limit_key(), "192.0.2.7");
    }

    #[test]
    fn no_header_from_a_proxy_means_the_proxy_itself() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(from_chain(ip("10.0.0.1"), None, &trusted), ip("10.0.0.1"));
    }
}
