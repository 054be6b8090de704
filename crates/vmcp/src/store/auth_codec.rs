//! The JSON form of the authorization server's records in Redis. The runtime types stay free of
//! serde (and of a storage format); these mirrors are the format, with short field names.
//! The pending login's form holds its upstream PKCE verifier: it is only ever stored sealed
//! (`store::auth`).

use serde::{Deserialize, Serialize};

use crate::auth::identity::Secret;
use crate::auth::server::clients::{ClientRecord, ClientSource};
use crate::auth::server::store::{
    ClientRequest, CodeRecord, PendingAuthorization, RefreshFamily, UserInfo,
};

#[derive(Serialize, Deserialize)]
pub(super) struct Client {
    id: String,
    redirect_uris: Vec<String>,
    scopes: Vec<String>,
    name: Option<String>,
    grant_types: Vec<String>,
    issued_at: u64,
    /// `registered`, `configured` or `document` (the Lua eviction reads it).
    source: String,
}

#[derive(Serialize, Deserialize)]
struct Request {
    client_id: String,
    redirect_uri: String,
    redirect_uri_sent: bool,
    state: Option<String>,
    code_challenge: String,
    scopes: Vec<String>,
    resource: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct User {
    id: String,
    name: Option<String>,
    email: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Pending {
    request: Request,
    upstream: String,
    callback_url: String,
    verifier: String,
    nonce: String,
    visited: Vec<String>,
    user: Option<User>,
    expires_at: u64,
}

#[derive(Serialize, Deserialize)]
struct Code {
    request: Request,
    user: User,
    family_id: String,
    expires_at: u64,
}

/// A family without its moving parts (current hash, expiry), which live beside it.
#[derive(Serialize, Deserialize)]
struct Family {
    family_id: String,
    client_id: String,
    user: User,
    scopes: Vec<String>,
    resource: Option<String>,
}

fn request(r: &ClientRequest) -> Request {
    Request {
        client_id: r.client_id.clone(),
        redirect_uri: r.redirect_uri.clone(),
        redirect_uri_sent: r.redirect_uri_sent,
        state: r.state.clone(),
        code_challenge: r.code_challenge.clone(),
        scopes: r.scopes.clone(),
        resource: r.resource.clone(),
    }
}

fn client_request(r: Request) -> ClientRequest {
    ClientRequest {
        client_id: r.client_id,
        redirect_uri: r.redirect_uri,
        redirect_uri_sent: r.redirect_uri_sent,
        state: r.state,
        code_challenge: r.code_challenge,
        scopes: r.scopes,
        resource: r.resource,
    }
}

fn user(u: &UserInfo) -> User {
    User { id: u.id.clone(), name: u.name.clone(), email: u.email.clone() }
}

fn user_info(u: User) -> UserInfo {
    UserInfo { id: u.id, name: u.name, email: u.email }
}

pub(super) fn encode_client(c: &ClientRecord) -> Vec<u8> {
    let source = match c.source {
        ClientSource::Registered => "registered",
        ClientSource::Configured => "configured",
        ClientSource::MetadataDocument => "document",
    };
    let v = Client {
        id: c.client_id.clone(),
        redirect_uris: c.redirect_uris.clone(),
        scopes: c.scopes.clone(),
        name: c.client_name.clone(),
        grant_types: c.grant_types.clone(),
        issued_at: c.issued_at,
        source: source.into(),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

pub(super) fn decode_client(b: &[u8]) -> Option<ClientRecord> {
    let c: Client = serde_json::from_slice(b).ok()?;
    let source = match c.source.as_str() {
        "registered" => ClientSource::Registered,
        "configured" => ClientSource::Configured,
        "document" => ClientSource::MetadataDocument,
        _ => return None,
    };
    Some(ClientRecord {
        client_id: c.id,
        redirect_uris: c.redirect_uris,
        scopes: c.scopes,
        client_name: c.name,
        grant_types: c.grant_types,
        issued_at: c.issued_at,
        source,
    })
}

pub(super) fn encode_pending(p: &PendingAuthorization) -> Vec<u8> {
    let v = Pending {
        request: request(&p.request),
        upstream: p.upstream.clone(),
        callback_url: p.callback_url.clone(),
        verifier: p.upstream_verifier.expose().to_owned(),
        nonce: p.nonce.clone(),
        visited: p.visited.clone(),
        user: p.user.as_ref().map(user),
        expires_at: p.expires_at,
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

pub(super) fn decode_pending(b: &[u8]) -> Option<PendingAuthorization> {
    let p: Pending = serde_json::from_slice(b).ok()?;
    Some(PendingAuthorization {
        request: client_request(p.request),
        upstream: p.upstream,
        callback_url: p.callback_url,
        upstream_verifier: Secret::new(p.verifier),
        nonce: p.nonce,
        visited: p.visited,
        user: p.user.map(user_info),
        expires_at: p.expires_at,
    })
}

pub(super) fn encode_code(c: &CodeRecord) -> Vec<u8> {
    let v = Code {
        request: request(&c.request),
        user: user(&c.user),
        family_id: c.family_id.clone(),
        expires_at: c.expires_at,
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

pub(super) fn decode_code(b: &[u8]) -> Option<CodeRecord> {
    let c: Code = serde_json::from_slice(b).ok()?;
    Some(CodeRecord {
        request: client_request(c.request),
        user: user_info(c.user),
        family_id: c.family_id,
        expires_at: c.expires_at,
    })
}

pub(super) fn encode_family(f: &RefreshFamily) -> Vec<u8> {
    let v = Family {
        family_id: f.family_id.clone(),
        client_id: f.client_id.clone(),
        user: user(&f.user),
        scopes: f.scopes.clone(),
        resource: f.resource.clone(),
    };
    serde_json::to_vec(&v).unwrap_or_default()
}

pub(super) fn decode_family(
    b: &[u8],
    current_hash: String,
    expires_at: u64,
) -> Option<RefreshFamily> {
    let f: Family = serde_json::from_slice(b).ok()?;
    Some(RefreshFamily {
        family_id: f.family_id,
        client_id: f.client_id,
        user: user_info(f.user),
        scopes: f.scopes,
        resource: f.resource,
        current_hash,
        expires_at,
    })
}
