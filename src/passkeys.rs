//! Passkeys: WebAuthn registration and discoverable (usernameless) sign-in, with the relying
//! party of `webauthn-rs`. A ceremony's state lives in the database between its start and its
//! finish (single use, 5 minutes; a registration's bound to its user), so any instance on the
//! database can finish what another started. A passkey is two factors in itself (the device and
//! its user verification): its sign-in asks no second factor and has `amr` `["hwk","mfa"]`.

use uuid::Uuid;
use webauthn_rs::prelude::{
    Credential, DiscoverableAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Webauthn, WebauthnBuilder,
};
use webauthn_rs_proto::{
    AuthenticatorSelectionCriteria, PublicKeyCredentialCreationOptions,
    PublicKeyCredentialRequestOptions, ResidentKeyRequirement, UserVerificationPolicy,
};

use crate::{
    auth::CurrentUser,
    clock,
    config::PasskeySettings,
    domain::{Amr, AuthMethod, User},
    error::ApiError,
    mail::{notices::notify, Notice},
    sessions::{Origin, Started},
    signin::{self, SignIn},
    state::AppState,
    store::{PasskeyDeletion, PasskeyRecord, PasskeyUse, TokenKind},
};

/// How long a ceremony may take, start to finish.
pub const FLOW_TTL: time::Duration = time::Duration::minutes(5);
/// The longest passkey name.
pub const MAX_NAME_CHARS: usize = 64;
const DEFAULT_NAME: &str = "Passkey";

/// The relying party, when passkeys are on.
pub struct Passkeys {
    webauthn: Webauthn,
}

impl Passkeys {
    /// The relying party of `settings`, named `rp_name` to authenticators that show a name.
    pub fn new(settings: &PasskeySettings, rp_name: &str) -> anyhow::Result<Self> {
        let (first, rest) = settings
            .origins
            .split_first()
            .ok_or_else(|| anyhow::anyhow!("passkeys need at least one origin"))?;
        let mut builder = WebauthnBuilder::new(&settings.rp_id, first)
            .map_err(|e| anyhow::anyhow!("the RP ID does not fit the origin {first}: {e}"))?
            .rp_name(rp_name)
            // The browser gives up before the ceremony expires (FLOW_TTL), never after.
            .timeout(std::time::Duration::from_secs(240));
        for origin in rest {
            builder = builder.append_allowed_origin(origin);
        }
        let webauthn = builder
            .build()
            .map_err(|e| anyhow::anyhow!("building the relying party: {e}"))?;
        Ok(Self { webauthn })
    }
}

/// The relying party, or 404 when passkeys are off.
fn relying_party(state: &AppState) -> Result<&Webauthn, ApiError> {
    state
        .passkeys
        .as_ref()
        .map(|p| &p.webauthn)
        .ok_or(ApiError::NotFound)
}

/// A ceremony begun: its id and the options for `navigator.credentials.create/get`.
pub struct Ceremony<O> {
    pub flow_id: String,
    pub options: O,
}

/// A passkey name as entered: trimmed, 1-64 characters, no control or formatting characters.
pub fn parse_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::field("name", "must be 1-64 characters"));
    }
    // No control or invisible formatting characters (bidirectional overrides, zero-width
    // marks): the name is shown in lists and in the notice mail.
    if name.chars().any(|c| c.is_control() || is_format(c)) {
        return Err(ApiError::field(
            "name",
            "must not contain control or invisible formatting characters",
        ));
    }
    Ok(name.to_owned())
}

/// Unicode's invisible formatting characters that can disguise text (general category Cf, the
/// ones in use: soft hyphen, Arabic marks, zero-width and bidirectional controls, BOM).
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{AD}' | '\u{600}'..='\u{605}' | '\u{61C}' | '\u{6DD}' | '\u{70F}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

async fn put_flow(
    state: &AppState,
    kind: TokenKind,
    user: Option<&User>,
    data: &impl serde::Serialize,
) -> Result<String, ApiError> {
    let flow_id = crate::random::token();
    let data = serde_json::to_string(data).map_err(ApiError::internal)?;
    state
        .store
        .put_token(
            kind,
            &crate::random::token_hash(&flow_id),
            user.map(|u| u.id),
            &data,
            clock::now() + FLOW_TTL,
        )
        .await?;
    Ok(flow_id)
}

/// Spends a ceremony: its state and the user it is bound to, or `invalid_passkey`.
async fn take_flow<T: serde::de::DeserializeOwned>(
    state: &AppState,
    kind: TokenKind,
    flow_id: &str,
) -> Result<(T, Option<crate::domain::UserId>), ApiError> {
    if flow_id.is_empty() || flow_id.len() > 256 {
        return Err(ApiError::InvalidPasskey);
    }
    let record = state
        .store
        .take_token(kind, &crate::random::token_hash(flow_id), clock::now())
        .await?
        .ok_or(ApiError::InvalidPasskey)?;
    let data = serde_json::from_str(&record.data).map_err(|_| ApiError::InvalidPasskey)?;
    Ok((data, record.user_id))
}

/// Starts registering a passkey for the signed-in user (whose sign-in is recent): options
/// asking for a discoverable credential with user verification, excluding their passkeys.
pub async fn start_registration(
    state: &AppState,
    current: &CurrentUser,
    user: &User,
) -> Result<Ceremony<PublicKeyCredentialCreationOptions>, ApiError> {
    let webauthn = relying_party(state)?;
    if !current.recently_authenticated() {
        return Err(ApiError::ReauthRequired);
    }
    let handle = state
        .store
        .webauthn_handle(user.id, crate::random::bytes::<16>())
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let exclude = state
        .store
        .passkeys(user.id)
        .await?
        .into_iter()
        .map(|p| p.credential_id)
        .collect();
    let (mut challenge, registration) = webauthn
        .start_passkey_registration(
            Uuid::from_bytes(handle),
            user.email.as_str(),
            user.name.as_str(),
            Some(exclude),
        )
        .map_err(|e| ApiError::internal(anyhow::anyhow!("starting a registration: {e}")))?;
    // The library's passkey options leave the credential's discoverability to the
    // authenticator; usernameless sign-in needs it, so the options require it (the library
    // cannot check it at the finish either way: no authenticator reports it reliably).
    challenge.public_key.authenticator_selection = Some(AuthenticatorSelectionCriteria {
        authenticator_attachment: None,
        resident_key: Some(ResidentKeyRequirement::Required),
        require_resident_key: true,
        user_verification: UserVerificationPolicy::Required,
    });
    let flow_id = put_flow(
        state,
        TokenKind::PasskeyRegistration,
        Some(user),
        &registration,
    )
    .await?;
    Ok(Ceremony {
        flow_id,
        options: challenge.public_key,
    })
}

/// Completes a registration of the signed-in user: the authenticator's answer verified against
/// the ceremony they started, the passkey stored, a notice mailed.
pub async fn finish_registration(
    state: &AppState,
    current: &CurrentUser,
    flow_id: &str,
    credential: &RegisterPublicKeyCredential,
    name: Option<&str>,
) -> Result<PasskeyRecord, ApiError> {
    let webauthn = relying_party(state)?;
    let name = name.map(parse_name).transpose()?;
    let (registration, owner): (PasskeyRegistration, _) =
        take_flow(state, TokenKind::PasskeyRegistration, flow_id).await?;
    if owner != Some(current.id) {
        log::info!(
            "user {} sent another user's passkey registration",
            current.id
        );
        return Err(ApiError::InvalidPasskey);
    }
    let passkey = webauthn
        .finish_passkey_registration(credential, &registration)
        .map_err(|e| {
            log::info!("user {}: a passkey registration failed: {e}", current.id);
            ApiError::InvalidPasskey
        })?;
    let credential = Credential::from(passkey);
    let now = clock::now();
    let record = PasskeyRecord {
        id: Uuid::new_v4(),
        user_id: current.id,
        credential_id: credential.cred_id.to_vec(),
        name: name.unwrap_or_else(|| DEFAULT_NAME.to_owned()),
        counter: credential.counter,
        backup_eligible: credential.backup_eligible,
        backup_state: credential.backup_state,
        transports: transport_names(&credential),
        credential: serde_json::to_string(&credential).map_err(ApiError::internal)?,
        created_at: now,
        last_used_at: None,
    };
    match state.store.add_passkey(&record).await {
        Ok(true) => {}
        Ok(false) => return Err(ApiError::Unauthenticated),
        Err(crate::store::StoreError::Conflict) => {
            log::info!("user {}: that passkey is registered already", current.id);
            return Err(ApiError::InvalidPasskey);
        }
        Err(e) => return Err(e.into()),
    }
    log::info!("user {} registered a passkey", current.id);
    if let Some(user) = state.store.user_by_id(current.id).await? {
        notify(
            &state.mailer,
            &user,
            Notice::PasskeyAdded { name: &record.name },
        );
    }
    Ok(record)
}

/// The transports the authenticator reported, by their WebAuthn names.
fn transport_names(credential: &Credential) -> Vec<String> {
    credential
        .transports
        .iter()
        .flatten()
        .filter_map(|t| {
            serde_json::to_value(t)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
        })
        .collect()
}

/// The signed-in user's passkeys, oldest first.
pub async fn list(state: &AppState, current: &CurrentUser) -> Result<Vec<PasskeyRecord>, ApiError> {
    relying_party(state)?;
    Ok(state.store.passkeys(current.id).await?)
}

pub async fn rename(
    state: &AppState,
    current: &CurrentUser,
    id: &str,
    name: &str,
) -> Result<PasskeyRecord, ApiError> {
    relying_party(state)?;
    let name = parse_name(name)?;
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    state
        .store
        .rename_passkey(current.id, id, &name)
        .await?
        .ok_or(ApiError::NotFound)
}

/// Deletes one of the signed-in user's passkeys, unless it is their last way to sign in.
pub async fn delete(state: &AppState, current: &CurrentUser, id: &str) -> Result<(), ApiError> {
    relying_party(state)?;
    let id: Uuid = id.parse().map_err(|_| ApiError::NotFound)?;
    match state.store.delete_passkey(current.id, id).await? {
        PasskeyDeletion::Deleted => {
            log::info!("user {} deleted a passkey", current.id);
            Ok(())
        }
        PasskeyDeletion::NotFound => Err(ApiError::NotFound),
        PasskeyDeletion::LastSignInMethod => Err(ApiError::LastSignInMethod),
    }
}

/// Starts a usernameless sign-in: options for any discoverable credential of this RP.
pub async fn start_sign_in(
    state: &AppState,
) -> Result<Ceremony<PublicKeyCredentialRequestOptions>, ApiError> {
    let webauthn = relying_party(state)?;
    let (challenge, authentication) = webauthn
        .start_discoverable_authentication()
        .map_err(|e| ApiError::internal(anyhow::anyhow!("starting a sign-in: {e}")))?;
    let flow_id = put_flow(state, TokenKind::PasskeySignIn, None, &authentication).await?;
    Ok(Ceremony {
        flow_id,
        options: challenge.public_key,
    })
}

/// Completes a passkey sign-in: the credential found by its ID, its user handle matched, the
/// assertion verified (origin, RP ID, challenge, user verification, signature, counter) and its
/// use recorded; then a session, through the one sign-in path.
pub async fn finish_sign_in(
    state: &AppState,
    origin: &Origin,
    flow_id: &str,
    credential: &PublicKeyCredential,
) -> Result<(User, Started), ApiError> {
    let webauthn = relying_party(state)?;
    let (authentication, _): (DiscoverableAuthentication, _) =
        take_flow(state, TokenKind::PasskeySignIn, flow_id).await?;
    let Some((record, handle)) = state
        .store
        .passkey_by_credential(credential.get_credential_id())
        .await?
    else {
        log::info!("a passkey sign-in named an unknown credential");
        return Err(ApiError::PasskeyRejected);
    };
    // The user handle the authenticator keeps must be the credential's user's.
    let handle_matches = matches!(
        (credential.get_user_unique_id(), handle.as_ref()),
        (Some(sent), Some(stored)) if sent == stored.as_slice()
    );
    if !handle_matches {
        log::info!(
            "user {}: a passkey sign-in sent another user handle",
            record.user_id
        );
        return Err(ApiError::PasskeyRejected);
    }
    // Read before the check: a change of the user's sign-in methods meanwhile (this passkey
    // deleted, say) moves the credential version, and the session does not start.
    let Some(user) = state.store.user_by_id(record.user_id).await? else {
        return Err(ApiError::PasskeyRejected);
    };
    let stored = stored_credential(&record)?;
    let result = webauthn
        .finish_discoverable_authentication_v2(credential, authentication, &stored)
        .map_err(|e| {
            log::info!("user {}: a passkey sign-in failed: {e}", user.id);
            ApiError::PasskeyRejected
        })?;
    if !result.user_verified() {
        return Err(ApiError::PasskeyRejected);
    }
    let now = clock::now();
    let used = PasskeyUse {
        previous_counter: record.counter,
        counter: result.counter().max(record.counter),
        backup_eligible: result.backup_eligible(),
        backup_state: result.backup_state(),
        at: now,
    };
    if !state.store.record_passkey_use(record.id, used).await? {
        // Another sign-in with this passkey moved its counter meanwhile (or it was deleted).
        log::info!("user {}: a passkey was used twice at once", user.id);
        return Err(ApiError::PasskeyRejected);
    }
    let amr = Amr::one(AuthMethod::Hwk).with(AuthMethod::Mfa);
    match signin::sign_in(state, origin, &user, now, amr).await? {
        SignIn::Started(started) => {
            log::info!("user {} signed in with a passkey", user.id);
            Ok((user, started))
        }
        SignIn::MfaRequired(_) => Err(ApiError::internal(anyhow::anyhow!(
            "a passkey sign-in was asked for a second factor"
        ))),
    }
}

/// The stored credential, with the counter and backup state of its last use.
fn stored_credential(record: &PasskeyRecord) -> Result<Credential, ApiError> {
    let mut credential: Credential = serde_json::from_str(&record.credential)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("a stored passkey: {e}")))?;
    credential.counter = record.counter;
    credential.backup_eligible = record.backup_eligible;
    credential.backup_state = record.backup_state;
    Ok(credential)
}
