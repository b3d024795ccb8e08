package publish

import "time"

// Header is embedded in every JSON payload. The publisher fills it when the
// message is enqueued (PublishJSON and the Publish* helpers): V is
// SchemaVersion, Seq the next sequence number of the topic, TS the enqueue
// time in UTC, written as RFC 3339 with nanoseconds.
//
// Seq increases strictly per topic, across agent restarts too, but is not
// contiguous: a gap means messages were dropped (see Stats) or the agent
// restarted. Delivery is at least once (the outbox and the MQTT session may
// both resend after an outage or a crash, and not necessarily in order), so
// consumers deduplicate and order by (topic, seq).
type Header struct {
	V   int       `json:"v"`
	Seq uint64    `json:"seq"`
	TS  time.Time `json:"ts"`
}

// Stamp sets the header; the publisher calls it at enqueue time.
func (h *Header) Stamp(seq uint64, ts time.Time) {
	h.V = SchemaVersion
	h.Seq = seq
	h.TS = ts.UTC()
}

// Stamper is implemented by every payload that embeds Header (through its
// pointer). PublishJSON stamps payloads that implement it.
type Stamper interface {
	Stamp(seq uint64, ts time.Time)
}

// Box is a bounding box in pixels of the source frame: top-left (X1, Y1) and
// bottom-right (X2, Y2).
type Box struct {
	X1 float32 `json:"x1"`
	Y1 float32 `json:"y1"`
	X2 float32 `json:"x2"`
	Y2 float32 `json:"y2"`
}

// Detection is one detected object.
type Detection struct {
	Class   string  `json:"class"`
	ClassID int     `json:"class_id"`
	Score   float32 `json:"score"`
	Box     Box     `json:"box"`
	// BoxNorm is the box as centre x, centre y, width, height, each divided
	// by the frame's width or height (the YOLO label convention).
	BoxNorm [4]float32 `json:"box_norm"`
}

// DetectionsPayload is published on Topics.Detections for every processed
// frame (also when nothing was detected: Detections is then empty).
type DetectionsPayload struct {
	Header
	Device     string      `json:"device"`
	Camera     string      `json:"camera"`
	Frame      uint64      `json:"frame"` // the camera's frame sequence number
	Width      int         `json:"width"`
	Height     int         `json:"height"`
	Model      string      `json:"model"` // sha256 of the deploy model file, hex
	InferMS    float64     `json:"infer_ms"`
	Detections []Detection `json:"detections"`
}

// Camera states of StatePayload.State.
const (
	CameraStarting     = "starting"
	CameraStreaming    = "streaming"
	CameraReconnecting = "reconnecting"
	CameraFrozen       = "frozen"
	CameraStopped      = "stopped"
)

// StatePayload is published, retained, on Topics.State when a camera changes
// state and periodically.
type StatePayload struct {
	Header
	Device     string  `json:"device"`
	Camera     string  `json:"camera"`
	State      string  `json:"state"` // one of the Camera* states
	FPS        float64 `json:"fps"`
	Frames     uint64  `json:"frames"`
	Dropped    uint64  `json:"dropped"`
	Reconnects uint64  `json:"reconnects"`
	LastError  string  `json:"last_error"`
}

// Percentiles are latency percentiles in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

// CameraStats are the per-camera figures of StatsPayload.
type CameraStats struct {
	State        string      `json:"state"`         // as on Topics.State
	FPS          float64     `json:"fps"`           // frames read per second
	DetectFPS    float64     `json:"detect_fps"`    // frames detected per second
	LatencyMS    Percentiles `json:"latency_ms"`    // letterbox + inference + decode + NMS, recent frames
	Dropped      uint64      `json:"dropped"`       // frames replaced by a newer one before the detector took them
	Reconnects   uint64      `json:"reconnects"`    // reopen attempts since start
	Detected     uint64      `json:"detected"`      // frames run through the detector since start
	DetectErrors uint64      `json:"detect_errors"` // frames the detector failed on
}

// StatsPayload is published, retained, on Topics.Stats every
// Config.StatsInterval. Publisher.PublishStats fills the MQTT figures
// (QueueDepth through Connected) from Publisher.Stats.
type StatsPayload struct {
	Header
	Device        string                 `json:"device"`
	UptimeS       float64                `json:"uptime_s"`
	Model         string                 `json:"model"`
	Backend       string                 `json:"backend"`
	BackendNote   string                 `json:"backend_note,omitempty"`   // why "auto" chose it
	BackendDevice string                 `json:"backend_device,omitempty"` // the GPU and libraries
	Cameras       map[string]CameraStats `json:"cameras"`
	QueueDepth    int                    `json:"queue_depth"`
	OutboxRecords int                    `json:"outbox_records"`
	OutboxBytes   int64                  `json:"outbox_bytes"`
	DroppedQoS0   uint64                 `json:"dropped_qos0"`
	DroppedQoS1   uint64                 `json:"dropped_qos1"`
	Sent          uint64                 `json:"sent"`
	Reconnects    uint64                 `json:"reconnects"`
	Connected     bool                   `json:"connected"`
}

// CommandResultPayload is published on Topics.CommandResult for every
// command received: OK with the handler's Result, or not OK with Error (a
// refused command, or the handler's error). ID is empty when the command's id
// could not be read.
type CommandResultPayload struct {
	Header
	ID      string `json:"id,omitempty"`
	Command string `json:"command,omitempty"`
	OK      bool   `json:"ok"`
	Error   string `json:"error,omitempty"`
	Result  any    `json:"result,omitempty"`
}

// SnapshotMetaPayload is published, retained, on Topics.SnapshotMeta right
// after each JPEG on Topics.Snapshot. Snapshots are the one payload that is
// not JSON (raw JPEG bytes, which carry no header), so this companion message
// carries the version, sequence number and time that order them.
type SnapshotMetaPayload struct {
	Header
	Device      string `json:"device"`
	Camera      string `json:"camera"`
	Frame       uint64 `json:"frame"`
	Bytes       int    `json:"bytes"`
	ContentType string `json:"content_type"` // "image/jpeg"
}
