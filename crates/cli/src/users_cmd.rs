//! `profilectl track` and `profilectl user get|delete`: live user state on
//! a running profiled (gRPC client).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use profiled_proto::v1 as pb;
use serde_json::{Value, json};

use crate::client_cmd::{
    Conn, FeatureArgs, build_features_at, connect, input_kinds, request, runtime, spec, status_err,
};

/// Arguments of `profilectl track`.
#[derive(Debug, Args)]
pub struct TrackArgs {
    /// Connection and model (whose schema validates the fields).
    #[command(flatten)]
    pub conn: Conn,
    /// The user.
    #[arg(long = "user-id")]
    pub user_id: String,
    /// Events (`ITEM[:TS[:RATING]]`; without TS: now) and field values to
    /// store (`KEY=VALUE`).
    #[command(flatten)]
    pub features: FeatureArgs,
    /// Fields to clear. Repeatable.
    #[arg(long = "clear", value_name = "KEY")]
    pub clear: Vec<String>,
    /// A client event id for every event, `<ID>-<n>` (retrying with the same
    /// ids stores nothing twice).
    #[arg(long = "event-id", value_name = "ID")]
    pub event_id: Option<String>,
}

/// `profilectl user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// A user's stored fields and events (newest first).
    Get(UserArgs),
    /// Erase a user's stored state.
    Delete(UserArgs),
}

/// Arguments of `profilectl user get|delete`.
#[derive(Debug, Args)]
pub struct UserArgs {
    /// Connection.
    #[command(flatten)]
    pub conn: Conn,
    /// The user.
    #[arg(long = "user-id")]
    pub user_id: String,
    /// Events per page (get).
    #[arg(long, default_value_t = 20)]
    pub page_size: u32,
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs `profilectl track`.
pub fn run_track(a: TrackArgs) -> Result<()> {
    runtime()?.block_on(async move {
        let mut client = connect(&a.conn.addr, &a.conn.secure).await?;
        let kinds = input_kinds(&mut client, &a.conn).await?;
        let f = build_features_at(&a.features, &kinds, now_s())?;
        let mut fields = pb::FieldChange::set_all(f.fields);
        fields.extend(a.clear.iter().map(pb::FieldChange::clear));
        let events = f
            .events
            .into_iter()
            .enumerate()
            .map(|(n, mut e)| {
                if let Some(id) = &a.event_id {
                    e.event_id = format!("{id}-{n}");
                }
                e
            })
            .collect();
        let req = pb::TrackRequest {
            model: Some(spec(&a.conn)),
            users: vec![pb::UserTrack {
                user_id: a.user_id.clone(),
                events,
                fields,
            }],
            allow_partial: false,
            request_id: String::new(),
        };
        let r = client
            .track(request(&a.conn, req))
            .await
            .map_err(status_err)?
            .into_inner();
        let u = r.users.first().context("no user in the answer")?;
        if a.conn.json {
            let out = json!({
                "user_id": u.user_id, "stored": u.stored, "duplicates": u.duplicates,
                "dropped_too_old": u.dropped_too_old, "state_version": u.state_version,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            println!(
                "{}: stored {}, duplicates {}, dropped as too old {}; state version {}",
                u.user_id, u.stored, u.duplicates, u.dropped_too_old, u.state_version
            );
        }
        Ok(())
    })
}

fn value_json(v: &pb::FieldValue) -> Value {
    match &v.kind {
        Some(pb::field_value::Kind::Categorical(s)) => json!(s),
        Some(pb::field_value::Kind::Number(x)) => json!(x),
        Some(pb::field_value::Kind::Tags(t)) => Value::Object(
            t.tags
                .iter()
                .map(|t| (t.tag.clone(), json!(t.weight.unwrap_or(1.0))))
                .collect(),
        ),
        None => Value::Null,
    }
}

/// Runs `profilectl user get|delete`.
pub fn run_user(cmd: UserCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            UserCommand::Get(a) => {
                let mut client = connect(&a.conn.addr, &a.conn.secure).await?;
                let r = client
                    .get_user(request(
                        &a.conn,
                        pb::GetUserRequest {
                            user_id: a.user_id.clone(),
                            page_size: a.page_size,
                            page_token: String::new(),
                        },
                    ))
                    .await
                    .map_err(status_err)?
                    .into_inner();
                let mut names: Vec<&String> = r.fields.keys().collect();
                names.sort();
                let fields: serde_json::Map<String, Value> = names
                    .iter()
                    .map(|k| ((*k).clone(), value_json(&r.fields[*k])))
                    .collect();
                let events: Vec<Value> = r
                    .events
                    .iter()
                    .map(|e| json!({"item_id": e.item_id, "timestamp": e.timestamp, "rating": e.rating, "event_id": e.event_id}))
                    .collect();
                let out = json!({
                    "user_id": r.user_id, "state_version": r.state_version,
                    "updated_ms": r.updated_ms, "total_events": r.total_events,
                    "fields": fields, "events_newest_first": events,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            UserCommand::Delete(a) => {
                let mut client = connect(&a.conn.addr, &a.conn.secure).await?;
                let r = client
                    .delete_user(request(
                        &a.conn,
                        pb::DeleteUserRequest {
                            user_id: a.user_id.clone(),
                        },
                    ))
                    .await
                    .map_err(status_err)?
                    .into_inner();
                if r.existed {
                    println!("{}: erased", a.user_id);
                } else {
                    println!("{}: had no live state (erased anyway)", a.user_id);
                }
            }
        }
        Ok(())
    })
}
