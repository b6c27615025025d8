use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem::http::StatusCode;
use poem::http::header::USER_AGENT;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use service_kit::Problem;

use crate::db::{Database, DbError, Visit};

/// User agents are stored up to this many characters (the column is `varchar(250)`).
pub const MAX_USER_AGENT_CHARS: usize = 250;

pub struct VisitsApi {
    database: Option<Arc<Database>>,
}

#[derive(Object)]
struct Registered {
    /// Always "Registered request".
    #[oai(rename = "Response")]
    response: String,
}

#[derive(Object)]
struct RecentVisits {
    /// At most ten visits, newest first.
    #[oai(rename = "Response")]
    response: Vec<VisitView>,
}

#[derive(Object)]
struct VisitView {
    /// When the visit was received (RFC 3339, UTC).
    timestamp: DateTime<Utc>,
    /// The visitor's User-Agent, truncated to 250 characters; null when it sent none.
    user_agent: Option<String>,
}

#[derive(ApiResponse)]
enum RegisterResponse {
    /// The visit is committed to the database.
    #[oai(status = 200)]
    Ok(Json<Registered>),
    /// The database is unavailable. With `type` `about:blank` nothing was recorded, and trying
    /// again cannot record the visit twice. With `type`
    /// `tag:apprunner-vpc,2026:visit-outcome-unknown` the database could not confirm either way:
    /// the visit may have been recorded (look at /recent-visits before trying again).
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

/// The problem `type` of a visit whose outcome the database did not confirm.
pub const OUTCOME_UNKNOWN_TYPE: &str = "tag:apprunner-vpc,2026:visit-outcome-unknown";

#[derive(ApiResponse)]
enum RecentVisitsResponse {
    #[oai(status = 200)]
    Ok(Json<RecentVisits>),
    /// The database is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(Json<Problem>),
}

#[OpenApi]
impl VisitsApi {
    /// Records this visit (time and User-Agent) and answers once it is committed.
    #[oai(path = "/", method = "get")]
    async fn register(&self, request: &Request) -> RegisterResponse {
        let visit = Visit {
            at: Utc::now(),
            user_agent: user_agent(request),
        };
        let outcome = match &self.database {
            Some(database) => database.record_visit(visit).await,
            None => Err(DbError::NotConfigured),
        };
        match outcome {
            Ok(()) => RegisterResponse::Ok(Json(Registered {
                response: "Registered request".to_owned(),
            })),
            Err(error) => RegisterResponse::Unavailable(Json(problem(error, "nothing was stored"))),
        }
    }

    /// The ten most recent visits, newest first.
    #[oai(path = "/recent-visits", method = "get")]
    async fn recent_visits(&self) -> RecentVisitsResponse {
        let outcome = match &self.database {
            Some(database) => database.recent_visits().await,
            None => Err(DbError::NotConfigured),
        };
        match outcome {
            Ok(visits) => RecentVisitsResponse::Ok(Json(RecentVisits {
                response: visits
                    .into_iter()
                    .map(|visit| VisitView {
                        timestamp: visit.at,
                        user_agent: visit.user_agent,
                    })
                    .collect(),
            })),
            Err(error) => RecentVisitsResponse::Unavailable(Json(problem(error, "no visits could be read"))),
        }
    }
}

impl VisitsApi {
    pub fn new(database: Option<Arc<Database>>) -> Self {
        Self { database }
    }
}

/// The 503 a client sees; `outcome` says what that meant for this request (for a visit: that it
/// was not stored, so retrying cannot record it twice) — unless the database could not say.
fn problem(error: DbError, outcome: &str) -> Problem {
    let detail = match error {
        DbError::NotConfigured => "The database is not configured: set DB_HOST or DBSECRETSNAME.".to_owned(),
        DbError::Timeout => format!("The database did not answer in time; {outcome}. Try again later."),
        DbError::Unavailable | DbError::Failed => {
            format!("The database is unavailable; {outcome}. Try again later.")
        }
        DbError::OutcomeUnknown => {
            let mut problem = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database lost its answer and could not be asked in time whether this visit was \
                 stored: it may have been. Look at /recent-visits before trying again.",
            );
            problem.problem_type = OUTCOME_UNKNOWN_TYPE.to_owned();
            return problem;
        }
    };
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, detail)
}

/// The User-Agent as stored: bytes that are not UTF-8 replaced, cut at a character boundary.
fn user_agent(request: &Request) -> Option<String> {
    let raw = request.headers().get(USER_AGENT)?;
    let mut text = String::from_utf8_lossy(raw.as_bytes()).into_owned();
    if let Some((cut, _)) = text.char_indices().nth(MAX_USER_AGENT_CHARS) {
        text.truncate(cut);
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    fn request_with_agent(value: HeaderValue) -> Request {
        Request::builder().header(USER_AGENT, value).finish()
    }

    #[test]
    fn only_an_unknown_outcome_says_the_visit_may_have_been_stored() {
        let unknown = problem(DbError::OutcomeUnknown, "nothing was stored");
        assert_eq!(unknown.status, 503);
        assert_eq!(unknown.problem_type, OUTCOME_UNKNOWN_TYPE);
        assert!(unknown.detail.contains("may have been"), "{}", unknown.detail);
        assert!(
            !unknown.detail.contains("nothing was stored"),
            "{}",
            unknown.detail
        );
        for error in [DbError::Unavailable, DbError::Failed, DbError::Timeout] {
            let definite = problem(error, "nothing was stored");
            assert_eq!(definite.problem_type, "about:blank");
            assert!(
                definite.detail.contains("nothing was stored"),
                "{}",
                definite.detail
            );
        }
    }

    #[test]
    fn absent_user_agent_is_none() {
        assert_eq!(user_agent(&Request::default()), None);
    }

    #[test]
    fn long_user_agents_are_cut_at_a_character_boundary() {
        let agent = "é".repeat(300);
        let stored = user_agent(&request_with_agent(
            HeaderValue::from_str(&agent).expect("valid header"),
        ))
        .expect("present");
        assert_eq!(stored.chars().count(), MAX_USER_AGENT_CHARS);
        assert!(stored.chars().all(|c| c == 'é'));
    }

    #[test]
    fn non_utf8_bytes_are_replaced() {
        let value = HeaderValue::from_bytes(b"curl/8 \xff\xfe").expect("opaque header bytes");
        assert_eq!(
            user_agent(&request_with_agent(value)).as_deref(),
            Some("curl/8 \u{fffd}\u{fffd}")
        );
    }
}
