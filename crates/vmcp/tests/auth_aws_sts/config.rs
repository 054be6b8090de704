//! Configuration: ToolHive's `awsSts` keys load unchanged (its own example included), and each
//! load-time check reports its place in the file (`FILE:LINE:COL: path: message`).

use vmcp::config::{ConfigError, parse, validate_warnings};

/// Lines 1-8: two HTTP backends.
const BACKENDS: &str = "\
name: gw
backends:
  - name: a
    transport: streamable-http
    url: http://127.0.0.1:9001/mcp
  - name: b
    transport: streamable-http
    url: http://127.0.0.1:9002/mcp
";

fn problems(result: Result<vmcp::config::Config, ConfigError>) -> Vec<String> {
    match result {
        Err(ConfigError::Invalid(ps)) => ps.iter().map(|p| p.to_string()).collect(),
        Err(e) => panic!("not a semantic error: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

/// ToolHive's example of a valid `awsSts` block, from its CRD validation suite
/// (`test/e2e/chainsaw/operator/validation/mcpexternalauthconfig/chainsaw-test.yaml`, step
/// `accept-valid-awssts`, stacklok/toolhive at e25de16c), placed where vMCP's config has it.
#[test]
fn toolhive_example_loads() {
    let text = format!(
        "{BACKENDS}outgoingAuth:
  backends:
    a:
      type: aws_sts
      awsSts:
        region: us-east-1
        fallbackRoleArn: arn:aws:iam::123456789012:role/TestRole
"
    );
    let cfg = parse(&text, "vmcp.yaml").unwrap_or_else(|e| panic!("{e}"));
    let a = cfg.outgoing_auth.backends["a"].aws_sts.as_ref().unwrap();
    assert_eq!(a.region, "us-east-1");
    assert_eq!(a.fallback_role_arn.as_deref(), Some("arn:aws:iam::123456789012:role/TestRole"));
    // Without incoming auth no caller has a token to assume the role with.
    assert_eq!(
        validate_warnings(&cfg),
        [
            "outgoingAuth.backends.a: aws_sts needs the caller's token, but incomingAuth is anonymous: every request to the backend will be refused"
        ]
    );
}

/// Every key of ToolHive's `AwsStsConfig` and `RoleMapping`, plus vmcp's `stsEndpoint`; the
/// matcher is the example in ToolHive's `RoleMapping.Matcher` documentation.
#[test]
fn every_toolhive_key_loads() {
    let text = format!(
        "{BACKENDS}incomingAuth:
  type: oidc
  oidc:
    issuer: https://idp.example
    audience: https://gw.example/mcp
outgoingAuth:
  default:
    type: aws_sts
    awsSts:
      region: eu-west-1
      service: execute-api
      fallbackRoleArn: arn:aws:iam::123456789012:role/ReadOnly
      roleMappings:
        - claim: admins
          roleArn: arn:aws:iam::123456789012:role/Admin
          priority: 1
        - claim: dev
          roleArn: arn:aws-us-gov:iam::123456789012:role/team/Dev
        - matcher: 'claims[\"sub\"] == \"user123\" && !(\"act\" in claims)'
          roleArn: arn:aws:iam::123456789012:role/Direct
          priority: 0
      roleClaim: cognito:groups
      sessionDuration: 7200
      sessionNameClaim: email
      stsEndpoint: https://sts.eu-west-1.amazonaws.com
"
    );
    let cfg = parse(&text, "vmcp.yaml").unwrap_or_else(|e| panic!("{e}"));
    let a = cfg.outgoing_auth.default.as_ref().unwrap().aws_sts.as_ref().unwrap();
    assert_eq!(a.service.as_deref(), Some("execute-api"));
    assert_eq!(a.role_mappings.len(), 3);
    assert_eq!(
        a.role_mappings[2].matcher.as_deref(),
        Some(r#"claims["sub"] == "user123" && !("act" in claims)"#)
    );
    assert_eq!(a.role_mappings[0].claim.as_deref(), Some("admins"));
    assert_eq!(a.role_mappings[0].priority, Some(1));
    assert_eq!(a.role_mappings[1].role_arn, "arn:aws-us-gov:iam::123456789012:role/team/Dev");
    assert_eq!(a.role_claim.as_deref(), Some("cognito:groups"));
    assert_eq!(a.session_duration, Some(7200));
    assert_eq!(a.session_name_claim.as_deref(), Some("email"));
    assert_eq!(a.sts_endpoint.as_deref(), Some("https://sts.eu-west-1.amazonaws.com"));
    assert_eq!(validate_warnings(&cfg), Vec::<String>::new());
}

#[test]
fn aws_sts_checks_point_at_the_line() {
    let text = format!(
        "{BACKENDS}outgoingAuth:
  default:
    type: aws_sts
  backends:
    a:
      type: aws_sts
      awsSts:
        service: ''
        fallbackRoleArn: arn:aws:iam::1234:role/X
        roleMappings:
          - claim: dev
            matcher: '\"dev\" in claims[\"groups\"]'
            roleArn: arn:aws:iam::123456789012:role/Dev
          - matcher: 'size(claims[\"groups\"]) == 1'
            roleArn: arn:aws:iam::123456789012:user/U
          - roleArn: ''
        sessionDuration: 60
        sessionNameClaim: ''
        stsEndpoint: ftp://sts.example
        subjectProviderName: corp
    b:
      type: passthrough
      awsSts:
        region: us-east-1
"
    );
    let a = "outgoingAuth.backends.a.awsSts";
    let m = |i: usize| format!("{a}.roleMappings[{i}]");
    assert_eq!(
        problems(parse(&text, "vmcp.yaml")),
        [
            "vmcp.yaml:10:3: outgoingAuth.default.awsSts: required when type is aws_sts (region, and fallbackRoleArn or roleMappings)".to_owned(),
            format!("vmcp.yaml:15:7: {a}.region: required: the AWS region of STS and of the signature"),
            format!("vmcp.yaml:16:9: {a}.service: must not be empty (unset means aws-mcp)"),
            format!("vmcp.yaml:17:9: {a}.fallbackRoleArn: \"arn:aws:iam::1234:role/X\" is not an IAM role ARN: the account id must be 12 digits"),
            format!("vmcp.yaml:19:13: {}: give either claim or matcher, not both", m(0)),
            format!("vmcp.yaml:22:13: {}.matcher: at 1: function calls (size()) are not supported: vmcp evaluates a subset of CEL (see docs/auth.md)", m(1)),
            format!("vmcp.yaml:23:13: {}.roleArn: \"arn:aws:iam::123456789012:user/U\" is not an IAM role ARN: not a role (role/<name>)", m(1)),
            format!("vmcp.yaml:24:13: {}: claim or matcher is required", m(2)),
            format!("vmcp.yaml:24:13: {}.roleArn: required: the role this mapping assumes", m(2)),
            format!("vmcp.yaml:25:9: {a}.sessionDuration: 60 is out of range: STS sessions last 900 to 43200 seconds"),
            format!("vmcp.yaml:26:9: {a}.sessionNameClaim: must not be empty"),
            format!("vmcp.yaml:27:9: {a}.stsEndpoint: URL \"ftp://sts.example\" must start with http:// or https://"),
            format!("vmcp.yaml:28:9: {a}.subjectProviderName: names an upstream of the embedded authorization server, but there is none: add authserver-config.yaml beside this file, or remove subjectProviderName"),
            "vmcp.yaml:31:7: outgoingAuth.backends.b.awsSts: only used when type is aws_sts, but type is passthrough".to_owned(),
        ]
    );

    // Neither a fallback nor mappings: nothing to assume.
    let text = format!(
        "{BACKENDS}outgoingAuth:\n  backends:\n    a:\n      type: aws_sts\n      awsSts:\n        region: us-east-1\n"
    );
    assert_eq!(
        problems(parse(&text, "vmcp.yaml")),
        [format!(
            "vmcp.yaml:13:7: {a}: fallbackRoleArn or roleMappings is required: the role to assume"
        )]
    );
}
