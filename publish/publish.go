// Package publish moves the agent's messages to an MQTT broker with paho:
// the topic tree and JSON payloads of the MQTT contract, availability with a
// retained last will, a bounded queue that never blocks the caller, a
// persistent session with a file store and an on-disk outbox so QoS 1
// messages survive broker outages and agent restarts, command subscription
// with strict validation, and an optional in-process broker.
package publish

import "time"

// SchemaVersion is the "v" field of every JSON payload.
const SchemaVersion = 1

// Config is the TOML table [mqtt].
type Config struct {
	Broker         string        `toml:"broker"`          // "embedded" or tcp://host:1883, ssl://host:8883, ws://...
	EmbeddedListen string        `toml:"embedded_listen"` // listen address of the embedded broker (default 127.0.0.1:1883)
	Prefix         string        `toml:"prefix"`          // topic prefix (default yolo7d/<device_id>)
	ClientID       string        `toml:"client_id"`       // default yolo7d-<device_id>; must be stable for the persistent session
	Username       string        `toml:"username"`
	PasswordFile   string        `toml:"password_file"` // file holding the password (trailing newline trimmed)
	CAFile         string        `toml:"ca_file"`       // TLS: CA bundle for the broker
	CertFile       string        `toml:"cert_file"`     // TLS: client certificate
	KeyFile        string        `toml:"key_file"`      // TLS: client key
	InsecureTLS    bool          `toml:"insecure_skip_verify"`
	KeepAlive      time.Duration `toml:"keepalive"`        // default 30s
	ConnectTimeout time.Duration `toml:"connect_timeout"`  // default 10s
	QoS            byte          `toml:"qos"`              // QoS of detections (0 or 1; default 1). state/stats/availability/status are always QoS 1
	Retain         bool          `toml:"retain"`           // retain detections (default false)
	QueueSize      int           `toml:"queue_size"`       // in-memory queue length (default 1000)
	OutboxMaxBytes int64         `toml:"outbox_max_bytes"` // on-disk outbox bound (default 64 MiB)
	StatsInterval  time.Duration `toml:"stats_interval"`   // default 30s
	// StateDir is set by the agent (not a TOML key): the paho file store and
	// the outbox live in StateDir/mqtt.
	StateDir string `toml:"-"`
}
