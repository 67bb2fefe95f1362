// WebAuthn's JSON forms (Level 3) to and from the browser's credential API. authvault sends the
// options as JSON with base64url binary fields and takes `PublicKeyCredential.toJSON()` back;
// browsers that lack `parse*OptionsFromJSON` or `toJSON` get the same conversion by hand.

// PublicKeyCredential exists only in a secure context (HTTPS, or http://localhost).
export function supported() {
  return typeof globalThis.PublicKeyCredential === "function" && Boolean(navigator.credentials);
}

function bytesOf(data) {
  return data instanceof ArrayBuffer
    ? new Uint8Array(data)
    : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

// Unpadded base64url, as WebAuthn's JSON forms write binary.
export function toBase64url(data) {
  let binary = "";
  for (const byte of bytesOf(data)) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function fromBase64url(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0)).buffer;
}

const descriptor = (d) => ({ ...d, id: fromBase64url(d.id) });

// PublicKeyCredentialCreationOptionsJSON -> the options of navigator.credentials.create().
export function creationOptions(json) {
  if (typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function") {
    return PublicKeyCredential.parseCreationOptionsFromJSON(json);
  }
  return {
    ...json,
    challenge: fromBase64url(json.challenge),
    user: { ...json.user, id: fromBase64url(json.user.id) },
    excludeCredentials: json.excludeCredentials?.map(descriptor),
  };
}

// PublicKeyCredentialRequestOptionsJSON -> the options of navigator.credentials.get().
export function requestOptions(json) {
  if (typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function") {
    return PublicKeyCredential.parseRequestOptionsFromJSON(json);
  }
  return {
    ...json,
    challenge: fromBase64url(json.challenge),
    allowCredentials: json.allowCredentials?.map(descriptor),
  };
}

// Extension outputs may hold buffers (prf, largeBlob): base64url, as toJSON() writes them.
function jsonSafe(value) {
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return toBase64url(value);
  if (Array.isArray(value)) return value.map(jsonSafe);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, jsonSafe(v)]));
  }
  return value;
}

// A new or asserted PublicKeyCredential -> RegistrationResponseJSON / AuthenticationResponseJSON.
export function credentialJSON(credential) {
  if (typeof credential.toJSON === "function") return credential.toJSON();
  const r = credential.response;
  const response = { clientDataJSON: toBase64url(r.clientDataJSON) };
  if (r.attestationObject) {
    response.attestationObject = toBase64url(r.attestationObject);
    response.transports = r.getTransports?.() ?? [];
    const authenticatorData = r.getAuthenticatorData?.();
    if (authenticatorData) response.authenticatorData = toBase64url(authenticatorData);
    const publicKey = r.getPublicKey?.();
    if (publicKey) response.publicKey = toBase64url(publicKey);
    const algorithm = r.getPublicKeyAlgorithm?.();
    if (algorithm !== undefined) response.publicKeyAlgorithm = algorithm;
  } else {
    response.authenticatorData = toBase64url(r.authenticatorData);
    response.signature = toBase64url(r.signature);
    if (r.userHandle) response.userHandle = toBase64url(r.userHandle);
  }
  const json = {
    id: credential.id,
    rawId: toBase64url(credential.rawId),
    type: credential.type,
    response,
    clientExtensionResults: jsonSafe(credential.getClientExtensionResults()),
  };
  if (credential.authenticatorAttachment) json.authenticatorAttachment = credential.authenticatorAttachment;
  return json;
}

// What the browser's refusal means, in words (a DOMException carries no problem code).
export function refusal(err, rpId) {
  switch (err?.name) {
    case "NotAllowedError":
      return "cancelled, timed out, or the device could not verify you";
    case "InvalidStateError":
      return "this device already holds a passkey for this account";
    case "SecurityError":
      return `passkeys of ${rpId} cannot be used on a page of ${location.hostname}`;
    case "NotSupportedError":
      return "this device cannot make a passkey that authvault accepts";
    case "AbortError":
      return "cancelled";
    default:
      return null;
  }
}
