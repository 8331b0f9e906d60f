//! A pipeline's gateway keys kept in a Secret (`<pipeline>-gateway-keys`, key
//! `auth-keys.json`, which the gateway's pods mount), read and written back
//! as `auth keys --secret` edits them. A write replaces the Secret at the
//! version it was read at, so two edits at once never lose a key: the later
//! one fails with a conflict and is run again.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::objects::GATEWAY_KEYS_FILE;

/// A Secret holding a gateway key file.
pub struct KeySecret {
    api: Api<Secret>,
    name: String,
}

/// The key file as read, and the Secret to write it back to (absent: none yet).
pub struct ReadKeys {
    pub key_file: Option<Vec<u8>>,
    secret: Option<Secret>,
}

impl KeySecret {
    /// The Secret `name` in `namespace`, or in the client's default namespace.
    pub fn new(client: Client, namespace: Option<&str>, name: &str) -> Self {
        let api = match namespace {
            Some(namespace) => Api::namespaced(client, namespace),
            None => Api::default_namespaced(client),
        };
        Self { api, name: name.to_owned() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn read(&self) -> Result<ReadKeys, kube::Error> {
        let secret = self.api.get_opt(&self.name).await?;
        let key_file = secret.as_ref().and_then(|secret| secret.data.as_ref()?.get(GATEWAY_KEYS_FILE)).map(|bytes| bytes.0.clone());
        Ok(ReadKeys { key_file, secret })
    }

    /// Writes `key_file` back: creates the Secret, or replaces its key file
    /// (its other keys kept) at the version [`KeySecret::read`] saw.
    pub async fn write(&self, read: ReadKeys, key_file: Vec<u8>) -> Result<(), kube::Error> {
        let mut secret = read.secret.unwrap_or_else(|| Secret {
            metadata: kube::api::ObjectMeta { name: Some(self.name.clone()), ..kube::api::ObjectMeta::default() },
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        });
        secret.data.get_or_insert_with(BTreeMap::new).insert(GATEWAY_KEYS_FILE.to_owned(), ByteString(key_file));
        if secret.resource_version().is_some() {
            self.api.replace(&self.name, &PostParams::default(), &secret).await?;
        } else {
            self.api.create(&PostParams::default(), &secret).await?;
        }
        Ok(())
    }
}
