//! Appointments — scheduled meetings (spec 2.19–2.24, 2.33; `meeting.new` of 5.12 is in
//! [`crate::request`]). The spec gives them as JS calls (`rtcPeer.createAppointment(...)`);
//! on the socket they travel in module `meeting` (5.12 creates an appointment as
//! `meeting.new`), the JS parameters as fields.
//!
//! Where a table and its example disagree the example wins: `updateAppointment`'s example
//! sends no `startTime`/`endTime`, `instantAppointment`'s none either (and `oraId` for
//! `orgId`, read as well), so those are optional.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::bean::{Appointment, Room};
use crate::frame::{Frame, FrameError, encode};
use crate::id::{Id, de_id, de_opt_id};

/// A point in time as clients send it: a JS `Date` serialized (RFC 3339 text), the spec's
/// UTC `yyyyMMddHHmmss`, or milliseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum When {
    /// Milliseconds since the epoch.
    Ms(i64),
    /// Text: RFC 3339 or `yyyyMMddHHmmss`.
    Text(String),
}

/// A sub-topic of a meeting: `{ "title": "议题", "content": "具体内容" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Title.
    pub title: String,
    /// Content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// The fields of an appointment (`createAppointment` 2.19; `updateAppointment` 2.21 adds
/// `meetingId`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppointmentFields {
    /// Meeting name (default "即时会议").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// 1080p, 720p, 480p, 240p (kept, not used: audio only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// 1 audio, 2 web meeting, 3 training.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub meeting_type: Option<i64>,
    /// Start (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<When>,
    /// End (default: an hour after the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<When>,
    /// Invitees, `"memberId,name,email,id,Etc/GMT+8,role"` (2.19's example has an empty
    /// field more: `"0,ceshi,,,80,Etc/GMT+8,2"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    /// Sub-topics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<Topic>>,
}

/// `meeting.updateAppointment` (2.21).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateAppointment {
    /// The appointment.
    #[serde(deserialize_with = "de_id")]
    pub meeting_id: Id,
    /// Its new fields (`name` and `type` required, as the table says).
    #[serde(flatten)]
    pub fields: AppointmentFields,
}

/// A request naming an appointment (`queryAppointmentById` 2.20, `deleteAppointment` 2.22).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeetingRef {
    /// The appointment.
    #[serde(deserialize_with = "de_id")]
    pub meeting_id: Id,
    /// Its type (2.22, optional, not used).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub meeting_type: Option<i64>,
}

/// `meeting.queryAppointments` (2.23).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryAppointments {
    /// From (default: the start of today, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<When>,
    /// Until (default: 72 hours after the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<When>,
    /// Page, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_no: Option<i64>,
    /// Page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<i64>,
}

/// `meeting.getRoomByInviteCode` (2.24).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetRoomByInviteCode {
    /// The appointment's id.
    #[serde(deserialize_with = "de_id")]
    pub code: Id,
    /// Its random invite code (used instead of `code` when given).
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub invite_code: Option<Id>,
}

/// `meeting.instantAppointment` (2.33).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstantAppointment {
    /// Meeting name.
    pub name: String,
    /// 1 audio, 2 video, 3 training.
    #[serde(rename = "type")]
    pub meeting_type: i64,
    /// Public meeting.
    pub is_public: bool,
    /// Company (private deployments: 2).
    #[serde(
        default,
        alias = "oraId",
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub org_id: Option<Id>,
    /// The creator (the example sends it; the bridge uses the registered user).
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_id: Option<Id>,
    /// Start (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<When>,
    /// End (default: an hour after the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<When>,
}

/// An appointment request.
#[derive(Debug, Clone, PartialEq)]
pub enum AppointmentRequest {
    /// `meeting.createAppointment` (2.19)
    Create(AppointmentFields),
    /// `meeting.queryAppointmentById` (2.20)
    QueryById(MeetingRef),
    /// `meeting.updateAppointment` (2.21)
    Update(UpdateAppointment),
    /// `meeting.deleteAppointment` (2.22)
    Delete(MeetingRef),
    /// `meeting.queryAppointments` (2.23)
    Query(QueryAppointments),
    /// `meeting.getRoomByInviteCode` (2.24)
    ByInviteCode(GetRoomByInviteCode),
    /// `meeting.instantAppointment` (2.33)
    Instant(InstantAppointment),
}

/// The `meeting` methods [`AppointmentRequest::from_frame`] takes.
pub const METHODS: &[&str] = &[
    "createAppointment",
    "queryAppointmentById",
    "updateAppointment",
    "deleteAppointment",
    "queryAppointments",
    "getRoomByInviteCode",
    "instantAppointment",
];

impl AppointmentRequest {
    /// Types a `meeting` frame whose method is one of [`METHODS`].
    pub fn from_frame(f: &Frame) -> Result<AppointmentRequest, FrameError> {
        Ok(match f.method.as_str() {
            "createAppointment" => Self::Create(f.decode()?),
            "queryAppointmentById" => Self::QueryById(f.decode()?),
            "updateAppointment" => {
                let u: UpdateAppointment = f.decode()?;
                // Required by 2.21's table (its example sends both).
                for (missing, field) in [
                    (u.fields.name.is_none(), "name"),
                    (u.fields.meeting_type.is_none(), "type"),
                ] {
                    if missing {
                        return Err(FrameError::Fields {
                            module: "meeting".into(),
                            method: "updateAppointment".into(),
                            reason: format!("missing field `{field}`"),
                        });
                    }
                }
                Self::Update(u)
            }
            "deleteAppointment" => Self::Delete(f.decode()?),
            "queryAppointments" => Self::Query(f.decode()?),
            "getRoomByInviteCode" => Self::ByInviteCode(f.decode()?),
            "instantAppointment" => Self::Instant(f.decode()?),
            other => {
                return Err(FrameError::Unknown {
                    module: "meeting".into(),
                    method: other.into(),
                });
            }
        })
    }

    /// The method name (the module is `meeting`).
    pub fn method(&self) -> &'static str {
        match self {
            Self::Create(_) => "createAppointment",
            Self::QueryById(_) => "queryAppointmentById",
            Self::Update(_) => "updateAppointment",
            Self::Delete(_) => "deleteAppointment",
            Self::Query(_) => "queryAppointments",
            Self::ByInviteCode(_) => "getRoomByInviteCode",
            Self::Instant(_) => "instantAppointment",
        }
    }

    /// The request as a JSON object, envelope first.
    pub fn to_value(&self) -> Value {
        let m = self.method();
        match self {
            Self::Create(r) => encode("meeting", m, r),
            Self::QueryById(r) | Self::Delete(r) => encode("meeting", m, r),
            Self::Update(r) => encode("meeting", m, r),
            Self::Query(r) => encode("meeting", m, r),
            Self::ByInviteCode(r) => encode("meeting", m, r),
            Self::Instant(r) => encode("meeting", m, r),
        }
    }
}

/// `createAppointment`, `updateAppointment`, `instantAppointment` (2.19.3, 2.21.3, 2.33.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scheduled {
    /// The appointment's room.
    pub room_id: Id,
    /// The appointment.
    pub meeting_id: Id,
}

/// An invitee as `queryAppointmentById` returns it (2.20.3).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invitee {
    /// The caller's own id for the user (`memberId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_id: Option<String>,
    /// Nickname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// 1 compere, 2 participant (training: 2 lecturer, 3 participant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The user id on this server (0 or absent: not a user here).
    #[serde(
        default,
        deserialize_with = "de_opt_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<Id>,
}

/// `queryAppointmentById` (2.20.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppointmentFound {
    /// The appointment (8.5).
    pub meeting: Appointment,
    /// Its invitees.
    pub members: Vec<Invitee>,
    /// Its sub-topics.
    pub topics: Vec<Topic>,
}

/// `queryAppointments` (2.23.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Appointments {
    /// The appointments of the page.
    pub meetings: Vec<Appointment>,
}

/// `getRoomByInviteCode` (2.24.3) when the meeting may be entered (`result` 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvitedRoom {
    /// The meeting's room.
    pub room: Room,
    /// The meeting.
    pub meeting: Appointment,
}

/// `getRoomByInviteCode`'s `result` when it is not 0 (2.24.3): not started yet.
pub const NOT_STARTED: i64 = 3;
/// Over (the spec's "other: invalid meeting number").
pub const ENDED: i64 = 4;
/// No such meeting (or not one the caller may see).
pub const NOT_FOUND: i64 = 5;
/// `deleteAppointment`'s `result` (2.22.3): in use, not deleted.
pub const IN_USE: i64 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_needs_name_and_type() {
        let f = Frame::parse(
            r#"{"module":"meeting","method":"updateAppointment","meetingId":5,"name":"a"}"#,
        )
        .unwrap();
        let e = AppointmentRequest::from_frame(&f).unwrap_err();
        assert!(e.to_string().contains("type"), "{e}");
    }

    #[test]
    fn instant_reads_the_examples_misspelt_org_id() {
        let f = Frame::parse(
            r#"{"module":"meeting","method":"instantAppointment","type":2,"name":"T","userId":2,"oraId":2,"isPublic":false}"#,
        )
        .unwrap();
        let AppointmentRequest::Instant(i) = AppointmentRequest::from_frame(&f).unwrap() else {
            panic!()
        };
        assert_eq!(i.org_id, Some(2));
    }

    #[test]
    fn times_are_text_or_numbers() {
        let q: QueryAppointments =
            serde_json::from_str(r#"{"startTime":"20261207080000","endTime":1765065600000}"#)
                .unwrap();
        assert_eq!(q.start_time, Some(When::Text("20261207080000".into())));
        assert_eq!(q.end_time, Some(When::Ms(1_765_065_600_000)));
    }
}
