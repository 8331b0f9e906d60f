//! Server addresses as the config spells them.

/// The bootstrap list of a `kafka://host:port[,host:port...]` URL, as Kafka
/// clients take it (`host:port,host:port`).
pub fn kafka_bootstrap(url: &str) -> Result<String, String> {
    let Some(servers) = url.strip_prefix("kafka://") else {
        return Err(format!("{url:?} is not a kafka:// URL"));
    };
    let servers = servers.trim_end_matches('/');
    if servers.is_empty() {
        return Err(format!("{url:?} names no server"));
    }
    for server in servers.split(',') {
        let port = server.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(port))) if !host.is_empty() && port > 0 => {}
            _ => return Err(format!("{server:?} in {url:?} is not host:port")),
        }
    }
    Ok(servers.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_urls_become_bootstrap_lists() {
        assert_eq!(kafka_bootstrap("kafka://127.0.0.1:9092").as_deref(), Ok("127.0.0.1:9092"));
        assert_eq!(kafka_bootstrap("kafka://a:1,b:2/").as_deref(), Ok("a:1,b:2"));
        for bad in ["127.0.0.1:9092", "kafka://", "kafka://host", "kafka://host:x", "kafka://:9092", "kafka://h:0"] {
            assert!(kafka_bootstrap(bad).is_err(), "{bad} must be refused");
        }
    }
}
