//! `govbus workflow`: the sharing workflow over the router's `/api` (apply, answer, mediate,
//! decide, read outcomes), and `token` to issue the coordinator's and operators' API tokens.
use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use router::workflow::{
    token::{Role, TokenKey},
    Application,
};

/// Where the router is and who is asking.
#[derive(Debug, Args)]
pub struct Caller {
    /// A provisioning file (`agencies/<id>.env`, `departments/<id>.env`) holding
    /// `GOVBUS_API_TOKEN` and `GOVBUS_API_URL`.
    #[arg(long, global = true)]
    env_file: Option<PathBuf>,
    /// The router's workflow API (its `[api]` listener).
    #[command(flatten)]
    api: crate::api::ApiTarget,
    /// A file holding the API token (default: the env file's, else `GOVBUS_API_TOKEN`).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Print the router's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

/// `govbus workflow …`
#[derive(Debug, Args)]
pub struct WorkflowArgs {
    #[command(flatten)]
    caller: Caller,
    #[command(subcommand)]
    command: WorkflowCommand,
}

/// Workflow steps.
#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// (agency) Apply for an item's fields; the responsible department answers within 10 working days.
    Apply {
        /// Item id.
        #[arg(long, required_unless_present = "outside_department")]
        item: Option<String>,
        /// Fields needed, comma-separated (the record key among them).
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "outside_department"
        )]
        fields: Vec<String>,
        /// A request outside the catalogue: the department asked…
        #[arg(long, requires = "outside_data", conflicts_with_all = ["item", "fields"])]
        outside_department: Option<String>,
        /// …and the data needed, described.
        #[arg(long)]
        outside_data: Option<String>,
        /// `full` or `pseudonym` identity.
        #[arg(long, default_value = "full")]
        identity: String,
        /// Legal basis (article 35).
        #[arg(long)]
        legal_basis: String,
        /// Purpose of use.
        #[arg(long)]
        purpose: String,
        /// Last day needed (YYYY-MM-DD); open-ended when absent.
        #[arg(long)]
        valid_until: Option<chrono::NaiveDate>,
    },
    /// Applications your token may see.
    List,
    /// One application with every recorded step.
    Show {
        /// Application id.
        id: i64,
    },
    /// (department) Approve, with fewer fields if so decided, or refuse with a reason.
    Answer {
        /// Application id.
        id: i64,
        /// Approve.
        #[arg(long, conflicts_with = "refuse")]
        approve: bool,
        /// Refuse (goes to the coordinator).
        #[arg(long, required_unless_present = "approve")]
        refuse: bool,
        /// With --approve: the fields granted, when fewer than asked (comma-separated).
        #[arg(long, value_delimiter = ',')]
        fields: Option<Vec<String>>,
        /// The reason (required with --refuse).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// (coordinator) Record the outcome of mediation, or the decision.
    Resolve {
        /// Application id.
        id: i64,
        /// `mediation` or `decision`.
        #[arg(long)]
        stage: String,
        /// `grant`, `refuse`, or (mediation) `disputed`.
        #[arg(long)]
        result: String,
        /// With `grant`: the fields granted (comma-separated; default all asked).
        #[arg(long, value_delimiter = ',')]
        fields: Option<Vec<String>>,
        /// What was agreed or decided, and why.
        #[arg(long)]
        note: String,
    },
    /// Closed applications and their outcomes (published to all).
    Outcomes,
    /// (agency) Dispute a delivered record by its message id (article 44).
    Dispute {
        /// The delivery's message id (`govbus-agency tail` prints it).
        #[arg(long)]
        message_id: String,
        /// What is wrong with it.
        #[arg(long)]
        problem: String,
    },
    /// Disputes your token may see.
    Disputes,
    /// (agency) Register or change your three contacts (article 34), from a JSON file:
    /// {"leader": {"name", "phone"|"email"}, "sharing_officer": …, "technical_officer": …,
    /// "changed_on": "YYYY-MM-DD"}.
    ReportContacts {
        /// The JSON file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Contacts recorded (your own, or all for the coordinator and operators).
    Contacts,
    /// One dispute with every step and its verification report.
    ShowDispute {
        /// Dispute id.
        id: i64,
    },
    /// (operator) Record what the check of a dispute found: `technical` (the platform sends
    /// the record again), `data` (the department must publish a correction) or `unfounded`.
    Finding {
        /// Dispute id.
        id: i64,
        /// `technical`, `data` or `unfounded`.
        #[arg(long)]
        cause: String,
        /// What was found.
        #[arg(long)]
        note: String,
    },
    /// (operator) Print an API token for the coordinator or an operator (`token revoke`
    /// withdraws one before its end).
    #[command(args_conflicts_with_subcommands = true)]
    Token {
        /// `revoke`: withdraw a token.
        #[command(subcommand)]
        action: Option<TokenAction>,
        /// The platform's id secret (`platform.id_secret_file` of the router's config).
        #[arg(long)]
        platform_id_secret: Option<PathBuf>,
        /// `coordinator`, `operator`, `agency`, `department`, `platform` or `portal`.
        #[arg(long)]
        role: Option<String>,
        /// Who: a name for the coordinator or an operator, else the agency or department id.
        #[arg(long)]
        subject: Option<String>,
        /// Days the token is accepted, from today (Asia/Shanghai).
        #[arg(long, default_value_t = router::workflow::token::DEFAULT_VALID_DAYS)]
        days: u32,
    },
}

/// `govbus workflow token revoke`.
#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Withdraw a token before its end: the router refuses it from its next request.
    Revoke {
        /// The token, or its id (the fifth dot-separated part).
        token: String,
        /// The router's database (`database.url` of its config).
        #[arg(long, env = "GOVBUS__DATABASE__URL", hide_env_values = true)]
        database_url: String,
        /// Why (kept with the revocation).
        #[arg(long, default_value = "")]
        note: String,
    },
}

fn env_value(env: &Option<std::collections::HashMap<String, String>>, key: &str) -> Option<String> {
    env.as_ref().and_then(|e| e.get(key).cloned())
}

impl Caller {
    fn resolve(&self) -> anyhow::Result<(String, String, reqwest::Client)> {
        let env = match &self.env_file {
            Some(p) => Some(bus_schemas::envfile::read(p)?),
            None => None,
        };
        let (url, client) = self.api.resolve(env.as_ref())?;
        let token = match &self.token_file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", p.display()))?
                .trim()
                .to_string(),
            None => env_value(&env, "GOVBUS_API_TOKEN")
                .or_else(|| std::env::var("GOVBUS_API_TOKEN").ok())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "no API token: pass --env-file (your provisioning file), --token-file, or set GOVBUS_API_TOKEN"
                    )
                })?,
        };
        Ok((url, token, client))
    }
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = client
        .request(method, url)
        .bearer_auth(token)
        .timeout(std::time::Duration::from_secs(60));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| {
        anyhow::anyhow!("cannot reach the router's workflow API at {url}: {e}; is it running with api.listen (set --api-url, and --api-ca-file for a private CA)?")
    })?;
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = v["error"].as_str().unwrap_or("no reason given");
        anyhow::bail!("{url} answered {status}: {msg}");
    }
    Ok(v)
}

fn table(apps: &[Application]) -> String {
    let mut out = format!(
        "{:>5}  {:<12} {:<14} {:<10} {:<18} {:<11} {:<11}  {}\n",
        "id", "agency", "item", "state", "outcome", "submitted", "answer due", "fields"
    );
    for a in apps {
        out.push_str(&format!(
            "{:>5}  {:<12} {:<14} {:<10} {:<18} {:<11} {:<11}  {}\n",
            a.id,
            a.agency,
            a.item,
            a.state,
            a.outcome.as_deref().unwrap_or("-"),
            a.submitted_on,
            a.answer_due,
            a.granted_fields.as_ref().unwrap_or(&a.fields).join(",")
        ));
    }
    out
}

/// Runs a workflow command.
pub fn run(args: WorkflowArgs) -> anyhow::Result<ExitCode> {
    if let WorkflowCommand::Token {
        action,
        platform_id_secret,
        role,
        subject,
        days,
    } = &args.command
    {
        if let Some(TokenAction::Revoke {
            token,
            database_url,
            note,
        }) = action
        {
            let id = router::workflow::token::token_id(token).ok_or_else(|| {
                anyhow::anyhow!(
                    "`{}…` is neither an API token (gbt2.…) nor a token id (12 characters)",
                    token.chars().take(8).collect::<String>()
                )
            })?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let new = rt.block_on(async {
                let pool = router::store::connect(database_url, 2).await?;
                anyhow::Ok(router::workflow::token::revoke(&pool, id, note).await?)
            })?;
            println!(
                "token {id} {}",
                if new {
                    "revoked"
                } else {
                    "was already revoked"
                }
            );
            return Ok(ExitCode::SUCCESS);
        }
        let missing = |what: &str| {
            anyhow::anyhow!("`govbus workflow token` needs {what} (or `token revoke TOKEN`)")
        };
        let platform_id_secret = platform_id_secret
            .as_ref()
            .ok_or_else(|| missing("--platform-id-secret"))?;
        let role = role.as_deref().ok_or_else(|| missing("--role"))?;
        let subject = subject.as_deref().ok_or_else(|| missing("--subject"))?;
        let role = Role::parse(role).ok_or_else(|| {
            anyhow::anyhow!("role `{role}`: use coordinator, operator, agency, department, platform (another platform's id) or portal (the citizen portal, for the data-use log)")
        })?;
        anyhow::ensure!(*days >= 1, "--days must be at least 1");
        let secret = bus_schemas::keys::load_secret_as(platform_id_secret, "--platform-id-secret")?;
        let until =
            bus_schemas::validate::today_in_shanghai() + chrono::Duration::days(i64::from(*days));
        println!(
            "{}",
            TokenKey::derive(&secret).issue_until(role, subject, until)?
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (base, token, client) = args.caller.resolve()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    use reqwest::Method;
    let apps = format!("{base}/api/applications");
    let v =
        rt.block_on(async {
            match &args.command {
                WorkflowCommand::Apply {
                    item,
                    fields,
                    outside_department,
                    outside_data,
                    identity,
                    legal_basis,
                    purpose,
                    valid_until,
                } => {
                    let outside = outside_department
                        .as_ref()
                        .map(|d| json!({ "department": d, "data": outside_data }));
                    call(
                        &client,
                        Method::POST,
                        &apps,
                        &token,
                        Some(json!({
                            "item": item.clone().unwrap_or_default(), "fields": fields,
                            "identity": identity, "legal_basis": legal_basis, "purpose": purpose,
                            "valid_until": valid_until, "outside_catalogue": outside,
                        })),
                    )
                    .await
                }
                WorkflowCommand::ReportContacts { file } => {
                    let text = std::fs::read_to_string(file)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
                    let body: Value = serde_json::from_str(&text)
                        .map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", file.display()))?;
                    call(
                        &client,
                        Method::POST,
                        &format!("{base}/api/contacts"),
                        &token,
                        Some(body),
                    )
                    .await
                }
                WorkflowCommand::Contacts => {
                    call(
                        &client,
                        Method::GET,
                        &format!("{base}/api/contacts"),
                        &token,
                        None,
                    )
                    .await
                }
                WorkflowCommand::List => call(&client, Method::GET, &apps, &token, None).await,
                WorkflowCommand::Show { id } => {
                    call(&client, Method::GET, &format!("{apps}/{id}"), &token, None).await
                }
                WorkflowCommand::Answer {
                    id,
                    approve,
                    fields,
                    note,
                    ..
                } => {
                    let decision = if *approve { "approve" } else { "refuse" };
                    call(
                        &client,
                        Method::POST,
                        &format!("{apps}/{id}/answer"),
                        &token,
                        Some(json!({ "decision": decision, "fields": fields, "note": note })),
                    )
                    .await
                }
                WorkflowCommand::Resolve {
                    id,
                    stage,
                    result,
                    fields,
                    note,
                } => call(
                    &client,
                    Method::POST,
                    &format!("{apps}/{id}/resolve"),
                    &token,
                    Some(
                        json!({ "stage": stage, "result": result, "fields": fields, "note": note }),
                    ),
                )
                .await,
                WorkflowCommand::Outcomes => {
                    call(
                        &client,
                        Method::GET,
                        &format!("{base}/api/outcomes"),
                        &token,
                        None,
                    )
                    .await
                }
                WorkflowCommand::Dispute {
                    message_id,
                    problem,
                } => {
                    call(
                        &client,
                        Method::POST,
                        &format!("{base}/api/disputes"),
                        &token,
                        Some(json!({ "message_id": message_id, "problem": problem })),
                    )
                    .await
                }
                WorkflowCommand::Disputes => {
                    call(
                        &client,
                        Method::GET,
                        &format!("{base}/api/disputes"),
                        &token,
                        None,
                    )
                    .await
                }
                WorkflowCommand::ShowDispute { id } => {
                    call(
                        &client,
                        Method::GET,
                        &format!("{base}/api/disputes/{id}"),
                        &token,
                        None,
                    )
                    .await
                }
                WorkflowCommand::Finding { id, cause, note } => {
                    call(
                        &client,
                        Method::POST,
                        &format!("{base}/api/disputes/{id}/finding"),
                        &token,
                        Some(json!({ "cause": cause, "note": note })),
                    )
                    .await
                }
                WorkflowCommand::Token { .. } => unreachable!("handled above"),
            }
        })?;
    let dispute_command = matches!(
        args.command,
        WorkflowCommand::Dispute { .. }
            | WorkflowCommand::Disputes
            | WorkflowCommand::ShowDispute { .. }
            | WorkflowCommand::Finding { .. }
            | WorkflowCommand::ReportContacts { .. }
            | WorkflowCommand::Contacts
    );
    if args.caller.json || dispute_command {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &args.command {
        WorkflowCommand::List | WorkflowCommand::Outcomes => {
            let apps: Vec<Application> = serde_json::from_value(v)?;
            print!("{}", table(&apps));
        }
        WorkflowCommand::Show { .. } => {
            let app: Application = serde_json::from_value(v["application"].clone())?;
            print!("{}", table(std::slice::from_ref(&app)));
            for e in v["events"].as_array().into_iter().flatten() {
                println!(
                    "  {}  {:<11} {:<14} {}: {}",
                    e["at"].as_str().unwrap_or(""),
                    e["role"].as_str().unwrap_or(""),
                    e["actor"].as_str().unwrap_or(""),
                    e["action"].as_str().unwrap_or(""),
                    e["note"].as_str().unwrap_or("")
                );
            }
        }
        _ => {
            let app: Application = serde_json::from_value(v)?;
            print!("{}", table(std::slice::from_ref(&app)));
        }
    }
    Ok(ExitCode::SUCCESS)
}
