//! A software WebAuthn authenticator and client for the passkey tests: P-256 (ES256) discoverable
//! credentials, `none` attestation, answers in the JSON form `PublicKeyCredential.toJSON()`
//! writes. Built on `p256` and `ciborium` from the WebAuthn Level 3 data layouts (authenticator
//! data, attested credential data, COSE keys, client data), independent of the server's library.
//! Every knob a test turns is a way an answer can be wrong: the origin, the RP ID, user
//! verification, the sign counter, the user handle.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD as B64, Engine};
use ciborium::Value as Cbor;
use p256::ecdsa::{signature::Signer, Signature, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const UP: u8 = 0x01;
const UV: u8 = 0x04;
const BE: u8 = 0x08;
const BS: u8 = 0x10;
const AT: u8 = 0x40;

/// One credential the authenticator holds.
pub struct SoftCredential {
    pub id: Vec<u8>,
    key: SigningKey,
    pub user_handle: Vec<u8>,
    pub rp_id: String,
    /// The sign counter, moved by each assertion.
    pub counter: u32,
}

/// How one ceremony's answer is made; the defaults make a good one.
#[derive(Clone)]
pub struct Answer {
    /// The page the browser says it ran on.
    pub origin: String,
    /// The RP ID whose hash goes into the authenticator data (default: the options').
    pub rp_id: Option<String>,
    pub user_verified: bool,
    /// Sign with this counter instead of moving the credential's own.
    pub counter: Option<u32>,
    /// Send this user handle instead of the credential's.
    pub user_handle: Option<Option<Vec<u8>>>,
    /// Answer this challenge instead of the options' (base64url).
    pub challenge: Option<String>,
}

impl Answer {
    pub fn from(origin: &str) -> Self {
        Self {
            origin: origin.to_owned(),
            rp_id: None,
            user_verified: true,
            counter: None,
            user_handle: None,
            challenge: None,
        }
    }
}

#[derive(Default)]
pub struct SoftAuthenticator {
    pub credentials: Vec<SoftCredential>,
    /// Whether the sign counter moves (many synced passkeys keep it at 0).
    pub counts: bool,
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    B64.decode(text).expect("base64url")
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn cbor(value: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("CBOR encodes");
    out
}

fn client_data(kind: &str, challenge: &str, origin: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": kind,
        "challenge": challenge,
        "origin": origin,
        "crossOrigin": false,
    }))
    .unwrap()
}

impl SoftAuthenticator {
    pub fn new() -> Self {
        Self {
            credentials: Vec::new(),
            counts: true,
        }
    }

    /// `navigator.credentials.create({publicKey})` and `toJSON()`: makes a new credential for the
    /// options' user and RP, and answers RegistrationResponseJSON.
    pub fn register(&mut self, options: &Value, answer: &Answer) -> Value {
        let rp_id = options["rp"]["id"].as_str().expect("rp.id").to_owned();
        let user_handle = unb64(options["user"]["id"].as_str().expect("user.id"));
        let challenge = answer
            .challenge
            .clone()
            .unwrap_or_else(|| options["challenge"].as_str().expect("challenge").to_owned());
        let key = SigningKey::random(&mut rand::rngs::OsRng);
        let id: Vec<u8> = rand::random::<[u8; 16]>().to_vec();
        let point = key.verifying_key().to_encoded_point(false);
        let cose = cbor(&Cbor::Map(vec![
            (Cbor::Integer(1.into()), Cbor::Integer(2.into())),
            (Cbor::Integer(3.into()), Cbor::Integer((-7).into())),
            (Cbor::Integer((-1).into()), Cbor::Integer(1.into())),
            (
                Cbor::Integer((-2).into()),
                Cbor::Bytes(point.x().unwrap().to_vec()),
            ),
            (
                Cbor::Integer((-3).into()),
                Cbor::Bytes(point.y().unwrap().to_vec()),
            ),
        ]));
        let counter = answer.counter.unwrap_or(0);
        let mut auth_data = Vec::new();
        auth_data.extend_from_slice(&sha256(
            answer.rp_id.as_deref().unwrap_or(&rp_id).as_bytes(),
        ));
        auth_data.push(UP | AT | BE | BS | if answer.user_verified { UV } else { 0 });
        auth_data.extend_from_slice(&counter.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID: none
        auth_data.extend_from_slice(&(id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&id);
        auth_data.extend_from_slice(&cose);
        let attestation = cbor(&Cbor::Map(vec![
            (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
            (Cbor::Text("attStmt".into()), Cbor::Map(vec![])),
            (Cbor::Text("authData".into()), Cbor::Bytes(auth_data)),
        ]));
        let client = client_data("webauthn.create", &challenge, &answer.origin);
        self.credentials.push(SoftCredential {
            id: id.clone(),
            key,
            user_handle,
            rp_id,
            counter,
        });
        json!({
            "id": b64(&id),
            "rawId": b64(&id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client),
                "attestationObject": b64(&attestation),
                "transports": ["internal", "hybrid"],
            },
            "clientExtensionResults": {"credProps": {"rk": true}},
            "authenticatorAttachment": "platform",
        })
    }

    /// `navigator.credentials.get({publicKey})` and `toJSON()` with credential `index`: an
    /// assertion answering AuthenticationResponseJSON.
    pub fn assert(&mut self, index: usize, options: &Value, answer: &Answer) -> Value {
        let counts = self.counts;
        let credential = &mut self.credentials[index];
        let challenge = answer
            .challenge
            .clone()
            .unwrap_or_else(|| options["challenge"].as_str().expect("challenge").to_owned());
        let counter = match answer.counter {
            Some(counter) => counter,
            None if counts => {
                credential.counter += 1;
                credential.counter
            }
            None => credential.counter,
        };
        let rp_id = answer
            .rp_id
            .clone()
            .unwrap_or_else(|| credential.rp_id.clone());
        let mut auth_data = Vec::new();
        auth_data.extend_from_slice(&sha256(rp_id.as_bytes()));
        auth_data.push(UP | BE | BS | if answer.user_verified { UV } else { 0 });
        auth_data.extend_from_slice(&counter.to_be_bytes());
        let client = client_data("webauthn.get", &challenge, &answer.origin);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&sha256(&client));
        let signature: Signature = credential.key.sign(&signed);
        let handle = match &answer.user_handle {
            Some(handle) => handle.clone(),
            None => Some(credential.user_handle.clone()),
        };
        json!({
            "id": b64(&credential.id),
            "rawId": b64(&credential.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client),
                "authenticatorData": b64(&auth_data),
                "signature": b64(signature.to_der().as_bytes()),
                "userHandle": handle.map(|h| b64(&h)),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        })
    }
}
