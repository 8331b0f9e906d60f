//! MQTT into Kafka through the gateway, with Mosquitto from scripts/services.sh:
//! readings published while the gateway is away are kept by the broker and
//! stored when it comes back; malformed ones end in the dead-letter topic.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use auth_core::Utility;
use auth_core::utility_topic;
use auth_ingest::mqtt::{self, READINGS_TOPIC};
use auth_ingest::{MqttSink, ReadingSink, Simulated, Simulator};
use auth_testkit::{Backend, require_server};
use common::{Served, T0, dead_letters, expected_place, spec, stored_readings};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::json;
use tokio::sync::watch;

fn mqtt_url() -> String {
    std::env::var("AUTH_MQTT_URL").unwrap_or_else(|_| "mqtt://127.0.0.1:1883".into())
}

/// Connects as `client_id` with a persistent (`clean = false`) or a fresh
/// session; with `subscribe`, subscribes as the gateway does; then leaves.
async fn session(client_id: &str, clean: bool, subscribe: bool) {
    session_at(&anonymous(&mqtt_url(), client_id), clean, subscribe).await;
}

/// [`session`] at a broker of the test's choosing, logging in as `login` says.
async fn session_at(login: &mqtt::BrokerLogin, clean: bool, subscribe: bool) {
    let mut options = mqtt::options(&login.url, &login.client_id, 1 << 20, login.ca_pem.as_deref()).unwrap();
    if let Some(key) = &login.key {
        mqtt::log_in_with(&mut options, key).unwrap();
    }
    options.set_clean_session(clean);
    let (client, mut events) = AsyncClient::new(options, 10);
    if subscribe {
        client.subscribe(READINGS_TOPIC, QoS::AtLeastOnce).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await.unwrap() {
                Event::Incoming(Packet::SubAck(_)) => break,
                Event::Incoming(Packet::ConnAck(_)) if !subscribe => break,
                _ => {}
            }
        }
    })
    .await
    .expect("the broker answers");
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while events.poll().await.is_ok() {} }).await;
}

fn anonymous(url: &str, client_id: &str) -> mqtt::BrokerLogin {
    mqtt::BrokerLogin { url: url.to_owned(), client_id: client_id.to_owned(), key: None, ca_pem: None }
}

async fn wait_for_records(backend: &Backend, count: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut stored = 0;
        for utility in Utility::ALL {
            stored += backend.log.end_offsets(&utility_topic(&backend.pipeline, utility)).await.unwrap().iter().sum::<u64>();
        }
        if stored >= count {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{stored} of {count} readings reached the topics");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Kafka and Mosquitto: scripts/test.sh runs it"]
async fn mqtt_readings_reach_the_topics_even_when_sent_while_the_gateway_was_away() {
    let url = mqtt_url();
    require_server("Mosquitto", url.trim_start_matches("mqtt://"));
    let backend = Backend::real("mqtt");
    let mut spec = spec();
    spec.simulator.malformed_share = 0.01;
    let served = Served::start(&backend, &spec).await;
    let client_id = format!("{}-gateway", backend.pipeline);
    // The gateway's persistent session exists before any meter publishes.
    session(&client_id, false, true).await;

    let mut simulator = Simulator::new(&spec.simulator, T0);
    let mut items = Vec::new();
    simulator.fill(&mut items, 3_000);
    let mut meters = MqttSink::connect(&url, &format!("{}-meters", backend.pipeline), None, None).unwrap();
    meters.write(&items[..1_000]).await.unwrap();

    let valid_among = |items: &[Simulated]| {
        items.iter().filter(|item| matches!(item, Simulated::Reading(reading) if reading.problems(None).is_empty())).count()
            as u64
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let gateway = tokio::spawn(mqtt::run(served.gateway.clone(), anonymous(&url, &client_id), stopped(stop_rx)));
    wait_for_records(&backend, valid_among(&items[..1_000])).await;
    meters.write(&items[1_000..2_000]).await.unwrap();
    wait_for_records(&backend, valid_among(&items[..2_000])).await;
    stop_tx.send(true).unwrap();
    gateway.await.unwrap().unwrap();

    // Away: the broker keeps these for the gateway's session.
    meters.write(&items[2_000..]).await.unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    let gateway = tokio::spawn(mqtt::run(served.gateway.clone(), anonymous(&url, &client_id), stopped(stop_rx)));
    wait_for_records(&backend, valid_among(&items)).await;
    stop_tx.send(true).unwrap();
    gateway.await.unwrap().unwrap();
    session(&client_id, true, false).await;

    let mut expected: Vec<common::Stored> = items
        .iter()
        .filter_map(|item| match item {
            Simulated::Reading(reading) if reading.problems(None).is_empty() => {
                Some(expected_place(reading, spec.log.partitions))
            }
            _ => None,
        })
        .collect();
    common::sort(&mut expected);
    let mut stored = stored_readings(backend.log.as_ref(), &backend.pipeline).await;
    let delivered = stored.len();
    stored.dedup_by(|a, b| a.3.meter_id == b.3.meter_id && a.3.ts_ms == b.3.ts_ms);
    assert!(stored == expected, "every valid reading, on its topic, partition and key");
    // QoS 1 is at least once: a message handled but not yet acknowledged when
    // the gateway stopped comes again (the stream counts it once).
    assert!(delivered - stored.len() <= 1_000, "{} redeliveries", delivered - stored.len());
    let refused = items.len() - expected.len();
    assert!(refused > 0, "the fleet sent malformed readings");
    let letters = dead_letters(backend.log.as_ref(), &backend.pipeline).await;
    assert!(letters.len() >= refused, "{} dead letters for {refused} malformed readings", letters.len());
    assert!(letters.iter().all(|letter| letter["source"] == "mqtt" && !letter["reason"].as_str().unwrap().is_empty()));
    drop(served);
}

/// A Mosquitto of the test's own, run with the password and ACL files that
/// `auth keys mosquitto` writes: every publisher logs in with its key.
struct Broker {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA and a certificate for 127.0.0.1 it signed, made with openssl in `dir`; returns the CA's PEM.
fn certificates(dir: &std::path::Path) -> Vec<u8> {
    let openssl = |args: &[&str]| {
        let output = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
        assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=auth test CA"]);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    openssl(&[
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "1",
        "-extfile", "san.ext",
    ]);
    std::fs::read(dir.join("ca.pem")).unwrap()
}

impl Broker {
    /// Plain MQTT, or with `tls` TLS only (`mqtts://`); returns the broker and, with TLS, the CA certificate (PEM) of its certificate.
    fn start(files: &auth_ingest::keys::MosquittoFiles, tls: bool) -> (Self, Option<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(dir.path().join("passwords"), &files.passwords).unwrap();
        std::fs::write(dir.path().join("acl"), &files.acl).unwrap();
        let user = String::from_utf8(std::process::Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
        let ca = tls.then(|| certificates(dir.path()));
        let tls_settings = if tls {
            format!("cafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n", dir.path().display())
        } else {
            String::new()
        };
        let config = format!(
            "listener {port} 127.0.0.1\n{tls_settings}allow_anonymous false\npassword_file {0}/passwords\nacl_file {0}/acl\nuser {1}\n\
             persistence false\nlog_dest file {0}/mosquitto.log\n",
            dir.path().display(),
            user.trim()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), config).unwrap();
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(dir.path().join("mosquitto.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto (scripts/services.sh installs Debian's mosquitto)");
        let url = format!("{}://127.0.0.1:{port}", if tls { "mqtts" } else { "mqtt" });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the test's Mosquitto did not listen within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        (Self { child, url, _dir: dir }, ca)
    }
}

/// Connects (logging in with `key`), publishes `payload` to `topic` with QoS 1, waits for PUBACK; or returns the refusal.
async fn publish(url: &str, key: Option<&str>, topic: &str, payload: String) -> Result<(), String> {
    publish_over(url, None, key, topic, payload).await
}

/// [`publish`], over TLS when `ca` is given.
async fn publish_over(url: &str, ca: Option<&[u8]>, key: Option<&str>, topic: &str, payload: String) -> Result<(), String> {
    let mut options = mqtt::options(url, &format!("meter-{}", fastrand::u64(..)), 1 << 20, ca).map_err(|err| err.to_string())?;
    if let Some(key) = key {
        mqtt::log_in_with(&mut options, key).unwrap();
    }
    let (client, mut events) = AsyncClient::new(options, 10);
    client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(err) => return Err(err.to_string()),
            }
        }
    })
    .await
    .expect("the broker answers");
    let _ = client.disconnect().await;
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's mosquitto: scripts/test.sh runs it"]
async fn a_broker_with_the_keys_files_takes_only_each_meters_own_readings() {
    let backend = Backend::embedded("mqtt-auth");
    let spec = spec();
    let served = Served::start(&backend, &spec).await;
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("keys.json");
    let own = common::TEST_METERS + 1;
    let other = common::TEST_METERS + 2;
    let scope = auth_ingest::keys::KeyScope::meters(&[&own.to_string()]);
    let (meter_key, _) = auth_ingest::keys::create_key(&path, "meter", &scope, 0).unwrap();
    let subscriber = auth_ingest::keys::KeyScope { subscriber: true, ..Default::default() };
    let (gateway_key, _) = auth_ingest::keys::create_key(&path, "gateway", &subscriber, 0).unwrap();
    let files = auth_ingest::keys::mosquitto_files(&auth_ingest::keys::list_keys(&path).unwrap(), None).unwrap();
    assert!(files.acl.contains(&format!("topic write meters/{own}/readings")), "{}", files.acl);
    let (broker, _) = Broker::start(&files, false);

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let session = mqtt::session_id(&backend.pipeline, &gateway_key);
    let login = mqtt::BrokerLogin { url: broker.url.clone(), client_id: session, key: Some(gateway_key), ca_pem: None };
    // The gateway's persistent session exists before any meter publishes.
    session_at(&login, false, true).await;
    let gateway = tokio::spawn(mqtt::run(served.gateway.clone(), login, async move {
        let _ = stop_rx.wait_for(|stopped| *stopped).await;
    }));
    let reading = |meter: u64| json!({"meterId": meter, "tsMs": T0, "value": 1.5}).to_string();

    // Without credentials, or with a wrong key, the broker refuses the connection.
    assert!(publish(&broker.url, None, &mqtt::meter_topic(own), reading(own)).await.is_err(), "anonymous");
    // A key ends in a hex digit, so `x` makes it wrong whatever its last digit was.
    let wrong = format!("{}x", &meter_key[..meter_key.len() - 1]);
    assert!(publish(&broker.url, Some(&wrong), &mqtt::meter_topic(own), reading(own)).await.is_err(), "a wrong key");
    // Another meter's topic: Mosquitto's ACL drops it (MQTT 3.1.1 still acknowledges it).
    publish(&broker.url, Some(&meter_key), &mqtt::meter_topic(other), reading(other)).await.unwrap();
    // Another meter's reading in its own topic: the gateway refuses it.
    publish(&broker.url, Some(&meter_key), &mqtt::meter_topic(own), reading(other)).await.unwrap();
    // Its own reading in its own topic is stored.
    publish(&broker.url, Some(&meter_key), &mqtt::meter_topic(own), reading(own)).await.unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let letters = loop {
        let letters = dead_letters(backend.log.as_ref(), &backend.pipeline).await;
        let stored = stored_readings(backend.log.as_ref(), &backend.pipeline).await;
        if !letters.is_empty() && !stored.is_empty() {
            break letters;
        }
        assert!(std::time::Instant::now() < deadline, "the gateway handled no message within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = letters[0]["reason"].as_str().unwrap();
    assert_eq!(reason, format!("the key `topic meters/{own}/readings` may not send readings for meter {other}"));
    let stored = stored_readings(backend.log.as_ref(), &backend.pipeline).await;
    let meters: Vec<u64> = stored.iter().map(|stored| stored.3.meter_id).collect();
    assert_eq!(meters, [own], "only the meter's own reading, from its own topic");
    stop_tx.send(true).unwrap();
    gateway.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's mosquitto and openssl: scripts/test.sh runs it"]
async fn over_tls_the_gateway_and_meters_check_the_brokers_certificate() {
    let backend = Backend::embedded("mqtt-tls");
    let spec = spec();
    let served = Served::start(&backend, &spec).await;
    let keys = tempfile::tempdir().unwrap();
    let path = keys.path().join("keys.json");
    let meter = common::TEST_METERS + 5;
    let (meter_key, _) = auth_ingest::keys::create_key(&path, "meter", &auth_ingest::keys::KeyScope::meters(&[&meter.to_string()]), 0).unwrap();
    let subscriber = auth_ingest::keys::KeyScope { subscriber: true, ..Default::default() };
    let (gateway_key, _) = auth_ingest::keys::create_key(&path, "gateway", &subscriber, 0).unwrap();
    let files = auth_ingest::keys::mosquitto_files(&auth_ingest::keys::list_keys(&path).unwrap(), None).unwrap();
    let (broker, ca) = Broker::start(&files, true);
    let ca = ca.unwrap();
    assert!(broker.url.starts_with("mqtts://"));

    // Without the CA there is nothing to check the broker against: refused before connecting.
    let refused = publish_over(&broker.url, None, Some(&meter_key), &mqtt::meter_topic(meter), String::new()).await;
    assert!(refused.is_err_and(|err| err.contains("CA certificate")));
    // A plain MQTT client to the TLS listener gets no session.
    let plain = broker.url.replace("mqtts://", "mqtt://");
    assert!(publish(&plain, Some(&meter_key), &mqtt::meter_topic(meter), String::new()).await.is_err());

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let login = mqtt::BrokerLogin {
        url: broker.url.clone(),
        client_id: mqtt::session_id(&backend.pipeline, &gateway_key),
        key: Some(gateway_key),
        ca_pem: Some(ca.clone()),
    };
    let gateway = tokio::spawn(mqtt::run(served.gateway.clone(), login, async move {
        let _ = stop_rx.wait_for(|stopped| *stopped).await;
    }));
    let reading = json!({"meterId": meter, "tsMs": T0, "value": 2.5}).to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // QoS 1 to a session the gateway may not have subscribed yet: send until it is stored.
    while stored_readings(backend.log.as_ref(), &backend.pipeline).await.is_empty() {
        publish_over(&broker.url, Some(&ca), Some(&meter_key), &mqtt::meter_topic(meter), reading.clone()).await.unwrap();
        assert!(std::time::Instant::now() < deadline, "no reading over TLS reached the topics within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = stored_readings(backend.log.as_ref(), &backend.pipeline).await;
    assert!(stored.iter().all(|stored| stored.3.meter_id == meter && stored.3.value == 2.5), "{stored:?}");
    stop_tx.send(true).unwrap();
    gateway.await.unwrap().unwrap();
}
