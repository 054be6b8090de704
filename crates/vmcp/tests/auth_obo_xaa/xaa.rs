//! `xaa` against the IdP and target authorization server stubs, and subjects from the upstream
//! token vault of vmcp's authorization server (for `xaa` and `obo`).

use super::*;

pub(crate) struct Xaa {
    idp: Arc<Stub>,
    target: Arc<Stub>,
    idp_url: String,
    target_url: String,
}

/// The IdP (step 1) and the backend's authorization server (step 2), each expecting exactly its
/// step's request.
pub(crate) async fn xaa_stubs() -> Xaa {
    let mut idp = Stub::new(
        Kind::XaaIdp,
        &[
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token_type", ID_TOKEN),
            ("requested_token_type", ID_JAG),
            ("audience", TARGET_AS),
            ("resource", TARGET_RESOURCE),
            ("scope", "tools.read tools.call"),
        ],
        ClientCheck::Basic(basic("gw-at-idp", IDP_SECRET)),
    );
    idp.audience = TARGET_AS.into();
    idp.resource = Some(TARGET_RESOURCE.into());
    let mut target = Stub::new(
        Kind::XaaTarget,
        &[("grant_type", JWT_BEARER), ("scope", "tools.read tools.call")],
        ClientCheck::Basic(basic("gw-at-as", TARGET_SECRET)),
    );
    target.audience = TARGET_AS.into();
    let (idp, target) = (Arc::new(idp), Arc::new(target));
    let idp_url = serve_stub(idp.clone()).await;
    let target_url = serve_stub(target.clone()).await;
    Xaa { idp, target, idp_url, target_url }
}

impl Xaa {
    pub(crate) fn config(&self) -> Value {
        json!({
            "type": "xaa",
            "xaa": {
                "idpTokenUrl": self.idp_url,
                "idpClientId": "gw-at-idp",
                "idpClientSecret": IDP_SECRET,
                "targetTokenUrl": self.target_url,
                "targetClientId": "gw-at-as",
                "targetClientSecret": TARGET_SECRET,
                "targetAudience": TARGET_AS,
                "targetResource": TARGET_RESOURCE,
                "scopes": ["tools.read", "tools.call"],
                "subjectTokenType": ID_TOKEN,
            }
        })
    }

    fn mismatches(&self) -> Vec<String> {
        [self.idp.mismatches(), self.target.mismatches()].concat()
    }
}

/// The token the backend gets: the `n`th of the target, for the ID-JAG of `id_token`.
fn xaa_token(n: usize, id_token: &str) -> Option<String> {
    Some(format!("Bearer xaa-{n}-for-{}", prefix(id_token)))
}

#[tokio::test]
async fn xaa_runs_both_steps() {
    let w = World::start().await;
    let x = xaa_stubs().await;
    let auth = w.build(x.config()).unwrap();
    let got = w.send(&auth, &user("alice", "alice-id-token"), "x1").await.unwrap();
    assert_eq!(got, xaa_token(1, "alice-id-token"));
    assert_eq!(x.mismatches(), Vec::<String>::new());
    assert_eq!(*x.idp.subjects.lock().unwrap(), ["alice-id-token"]);
    // The target got the ID-JAG the IdP minted for Alice's ID token.
    let jag = x.target.subjects.lock().unwrap()[0].clone();
    let (_, claims) = claims(&jag).unwrap();
    assert_eq!(claims["sub"], prefix("alice-id-token"));
    assert!(auth.is_user_bound());
}

/// Without client ids neither step carries client authentication.
#[tokio::test]
async fn xaa_public_clients_send_no_credentials() {
    let w = World::start().await;
    let mut x = xaa_stubs().await;
    let mut idp = Stub::new(Kind::XaaIdp, &[], ClientCheck::None);
    idp.expect = x.idp.expect.clone();
    idp.audience = TARGET_AS.into();
    idp.resource = Some(TARGET_RESOURCE.into());
    let mut target = Stub::new(Kind::XaaTarget, &[], ClientCheck::None);
    target.expect = x.target.expect.clone();
    target.audience = TARGET_AS.into();
    x.idp = Arc::new(idp);
    x.target = Arc::new(target);
    x.idp_url = serve_stub(x.idp.clone()).await;
    x.target_url = serve_stub(x.target.clone()).await;
    let mut cfg = x.config();
    for k in ["idpClientId", "idpClientSecret", "targetClientId", "targetClientSecret"] {
        cfg["xaa"].as_object_mut().unwrap().remove(k);
    }
    let auth = w.build(cfg).unwrap();
    let got = w.send(&auth, &user("alice", "alice-id-token"), "p1").await.unwrap();
    assert_eq!(got, xaa_token(1, "alice-id-token"));
    assert_eq!(x.mismatches(), Vec::<String>::new());
}

#[tokio::test]
async fn xaa_is_cached_per_subject() {
    let w = World::start().await;
    let x = xaa_stubs().await;
    let auth = w.build(x.config()).unwrap();
    for tag in ["c1", "c2", "c3"] {
        let got = w.send(&auth, &user("alice", "alice-id-token"), tag).await.unwrap();
        assert_eq!(got, xaa_token(1, "alice-id-token"));
    }
    assert_eq!((x.idp.calls(), x.target.calls()), (1, 1));
    let bob = w.send(&auth, &user("bob", "bob-id-token"), "c4").await.unwrap();
    assert_eq!(bob, xaa_token(2, "bob-id-token"));
    assert_eq!((x.idp.calls(), x.target.calls()), (2, 2));
    assert_eq!(x.mismatches(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn xaa_single_flight_covers_both_steps() {
    let w = Arc::new(World::start().await);
    let x = xaa_stubs().await;
    *x.idp.delay.lock().unwrap() = Duration::from_millis(200);
    *x.target.delay.lock().unwrap() = Duration::from_millis(200);
    let auth = w.build(x.config()).unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (w, auth) = (w.clone(), auth.clone());
            let who = if i % 2 == 0 { "alice" } else { "bob" };
            tokio::spawn(async move {
                let caller = user(who, &format!("{who}-id-token"));
                (who, w.send(&auth, &caller, &format!("f{i}")).await.unwrap())
            })
        })
        .collect();
    let mut per_user: HashMap<&str, Option<String>> = HashMap::new();
    for t in tasks {
        let (who, got) = t.await.unwrap();
        let suffix = format!("-for-{}", prefix(&format!("{who}-id-token")));
        assert!(got.as_deref().is_some_and(|g| g.ends_with(&suffix)), "{who}: {got:?}");
        assert_eq!(per_user.entry(who).or_insert(got.clone()), &got, "{who}");
    }
    assert_eq!((x.idp.calls(), x.target.calls()), (2, 2), "one flight per subject");
    assert_eq!(x.mismatches(), Vec::<String>::new());
}

#[tokio::test]
async fn xaa_invalid_grant_at_either_step_means_reauthenticate() {
    let w = World::start().await;
    let x = xaa_stubs().await;
    x.idp.set_mode(Mode::InvalidGrant);
    let auth = w.build(x.config()).unwrap();
    let e = w.send(&auth, &user("alice", "alice-id-SECRETISH"), "i1").await.unwrap_err();
    let OutgoingAuthError::Reauthenticate(m) = &e else { panic!("{e:?}") };
    assert_eq!(
        m,
        "xaa step 1 (IdP exchange) for backend \"api\": the token endpoint refused the caller's token: invalid_grant (HTTP 400)"
    );
    assert!(!format!("{e:?}").contains("SECRETISH"));
    assert_eq!(x.target.calls(), 0);

    x.idp.set_mode(Mode::Ok);
    x.target.set_mode(Mode::InvalidGrant);
    let auth = w.build(x.config()).unwrap();
    let e = w.send(&auth, &user("alice", "alice-id-token"), "i2").await.unwrap_err();
    let OutgoingAuthError::Reauthenticate(m) = &e else { panic!("{e:?}") };
    assert_eq!(
        m,
        "xaa step 2 (target grant) for backend \"api\": the token endpoint refused the caller's token: invalid_grant (HTTP 400)"
    );
    // The target's error echoed the ID-JAG; it is not passed on.
    let jag = x.target.subjects.lock().unwrap()[0].clone();
    assert!(!format!("{e} {e:?}").contains(&jag));
}

#[tokio::test]
async fn xaa_endpoint_down_is_unavailable_and_names_the_step() {
    let w = World::start().await;
    let x = xaa_stubs().await;
    let dead = format!("http://127.0.0.1:{}/token", common::free_port());
    let mut cfg = x.config();
    cfg["xaa"]["idpTokenUrl"] = json!(dead);
    let e = w.send(&w.build(cfg).unwrap(), &user("a", "t"), "n1").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "backend credentials unavailable: xaa step 1 (IdP exchange) for backend \"api\": cannot connect to the token endpoint"
    );
    let mut cfg = x.config();
    cfg["xaa"]["targetTokenUrl"] = json!(dead);
    let e = w.send(&w.build(cfg).unwrap(), &user("a", "t"), "n2").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "backend credentials unavailable: xaa step 2 (target grant) for backend \"api\": cannot connect to the token endpoint"
    );
    x.target.set_mode(Mode::ServerError);
    let e = w.send(&w.build(x.config()).unwrap(), &user("a", "t"), "n3").await.unwrap_err();
    assert!(matches!(&e, OutgoingAuthError::Unavailable(m) if m.ends_with("failed: HTTP 503")));
}

/// The first step's answer must be an ID-JAG for what was asked, or nothing reaches the target.
#[tokio::test]
async fn xaa_refuses_an_answer_that_is_not_the_id_jag_requested() {
    let w = World::start().await;
    let x = xaa_stubs().await;
    let step1 = "xaa step 1 (IdP exchange) for backend \"api\"";
    let cases = [
        (
            Mode::WrongIssuedType,
            "the IdP did not issue an ID-JAG (issued_token_type must be urn:ietf:params:oauth:token-type:id-jag)",
        ),
        (Mode::BearerTokenType, "the IdP's answer must have token_type N_A"),
        (
            Mode::WrongAudience,
            "the ID-JAG's aud is not the single audience requested, \"https://as.backend.example\"",
        ),
        (
            Mode::NoResource,
            "the ID-JAG's resource does not contain the resource requested, \"https://backend.example/mcp\"",
        ),
    ];
    for (mode, why) in cases {
        x.idp.set_mode(mode);
        let auth = w.build(x.config()).unwrap();
        let e = w.send(&auth, &user("alice", "alice-id-token"), "j").await.unwrap_err();
        let OutgoingAuthError::Unavailable(m) = &e else { panic!("{mode:?}: {e:?}") };
        assert_eq!(m, &format!("{step1}: {why}"), "{mode:?}");
    }
    assert_eq!(x.target.calls(), 0);
    assert_eq!(x.mismatches(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// With vmcp's authorization server: subjects from the upstream token vault.

const VMCP_ISSUER: &str = "https://vmcp.example";

/// A vault holding, for user `alice`, upstream `corp`'s tokens (with an ID token) and upstream
/// `plain`'s (without).
async fn world_with_vault() -> World {
    let vault = Vault::in_memory(Arc::new(crate::common::NoRefresh)).unwrap();
    let set = |at: &str, id: Option<&str>| TokenSet {
        access_token: Secret::new(at),
        refresh_token: None,
        id_token: id.map(Secret::new),
        expires_at: None,
        scope: None,
    };
    vault.store("alice", "corp", set("corp-access", Some("corp-id-token"))).await.unwrap();
    vault.store("alice", "plain", set("plain-access", None)).await.unwrap();
    let mut w = World::start().await;
    w.upstream = Some(UpstreamSource {
        issuer: VMCP_ISSUER.into(),
        tokens: Arc::new(vault),
        default_provider: "corp".into(),
    });
    w
}

fn vmcp_user(subject: &str) -> Caller {
    Caller::User(identity_of(VMCP_ISSUER, subject, "vmcp-issued-token"))
}

#[tokio::test]
async fn with_the_authorization_server_subjects_come_from_the_vault() {
    let w = world_with_vault().await;
    // xaa: the first upstream's ID token by default, or the named one's.
    let x = xaa_stubs().await;
    let auth = w.build(x.config()).unwrap();
    let got = w.send(&auth, &vmcp_user("alice"), "v1").await.unwrap();
    assert_eq!(got, xaa_token(1, "corp-id-token"));
    let mut cfg = x.config();
    cfg["xaa"]["subjectProviderName"] = json!("plain");
    let e = w.send(&w.build(cfg).unwrap(), &vmcp_user("alice"), "v2").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "backend credentials unavailable: cross-app access (xaa): upstream \"plain\" holds no ID token for the user (its scopes must include openid)"
    );
    // A user without a grant logs in again; a caller of another issuer has no vault entry.
    let e = w.send(&auth, &vmcp_user("bob"), "v3").await.unwrap_err();
    assert!(matches!(e, OutgoingAuthError::Reauthenticate(_)), "{e:?}");
    let e = w.send(&auth, &user("alice", "t"), "v4").await.unwrap_err();
    assert!(matches!(e, OutgoingAuthError::Reauthenticate(_)), "{e:?}");
    assert_eq!(x.mismatches(), Vec::<String>::new());

    // obo: the named upstream's access token; unnamed, the caller's own token (as in ToolHive).
    let (idp, url) = obo_idp("api://backend/.default offline_access").await;
    let mut cfg = obo_config(&url);
    cfg["obo"]["subjectTokenProviderName"] = json!("corp");
    let got = w.send(&w.build(cfg).unwrap(), &vmcp_user("alice"), "v5").await.unwrap();
    assert_eq!(got, obo_token(1, "corp-access"));
    let got = w.send(&w.build(obo_config(&url)).unwrap(), &vmcp_user("alice"), "v6").await;
    assert_eq!(got.unwrap(), obo_token(2, "vmcp-issued-token"));
    assert_eq!(idp.mismatches(), Vec::<String>::new());
}

/// Work with no user behind it (probes, connecting) gets the gateway's own token from the
/// target authorization server by client credentials, as ToolHive's health checks do: never a
/// user's, never the IdP step, cached. A target that will not grant one leaves it without.
#[tokio::test]
async fn xaa_system_work_uses_the_gateways_client_credentials() {
    let w = World::start().await;
    let x = xaa_stubs().await;
    let cc = Arc::new(Stub::new(
        Kind::ClientCredentials,
        &[
            ("grant_type", "client_credentials"),
            ("audience", TARGET_AS),
            ("scope", "tools.read tools.call"),
        ],
        ClientCheck::Basic(basic("gw-at-as", TARGET_SECRET)),
    ));
    let mut config = x.config();
    config["xaa"]["targetTokenUrl"] = json!(serve_stub(cc.clone()).await);
    let auth = w.build(config).unwrap();
    for n in ["s1", "s2"] {
        let got = w.send(&auth, &Caller::System, n).await.unwrap();
        assert_eq!(got.as_deref(), Some("Bearer cc-1"), "{n}");
    }
    assert_eq!(cc.mismatches(), Vec::<String>::new());
    assert_eq!((cc.calls(), x.idp.calls()), (1, 0), "one grant, cached; no IdP step");

    let refusing = Arc::new(Stub::new(
        Kind::ClientCredentials,
        &[],
        ClientCheck::Basic(basic("gw-at-as", TARGET_SECRET)),
    ));
    refusing.set_mode(Mode::ServerError);
    let mut config = x.config();
    config["xaa"]["targetTokenUrl"] = json!(serve_stub(refusing.clone()).await);
    let auth = w.build(config).unwrap();
    assert_eq!(w.send(&auth, &Caller::System, "s3").await.unwrap(), None);
}
