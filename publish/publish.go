// Package publish moves the agent's messages to an MQTT broker with paho:
// the topic tree and JSON payloads of the MQTT contract, availability with a
// retained last will, a bounded queue that never blocks the caller, a
// persistent session with a file store and an on-disk outbox so QoS 1
// messages survive broker outages and agent restarts, command subscription
// with strict validation, and an optional in-process broker.
//
// Delivery is at least once: after a broker outage or an agent crash, QoS 1
// messages may arrive twice and out of order (both the outbox and paho's
// session store resend). Every JSON payload carries the schema version "v",
// a per-topic sequence number "seq" that keeps increasing across restarts,
// and the enqueue time "ts" (see Header): consumers deduplicate and order by
// (topic, seq). Snapshots are the one payload that is not JSON (raw JPEG);
// their v, seq, ts and frame travel on "<cam>/snapshot/meta".
//
// Files, under Config.StateDir/mqtt: outbox/ (QoS 1 messages until the
// broker acknowledges them, see outbox.go for the format and the fsync
// policy), paho/ (paho's session store) and seq.json (sequence number
// reservations).
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
	// HomeAssistant publishes Home Assistant MQTT discovery configs
	// (retained) under DiscoveryPrefix, so the agent shows up as a device
	// with per-camera entities. Default false.
	HomeAssistant   bool   `toml:"home_assistant"`
	DiscoveryPrefix string `toml:"discovery_prefix"` // default "homeassistant"
	// StateDir is set by the agent (not a TOML key): the paho file store and
	// the outbox live in StateDir/mqtt.
	StateDir string `toml:"-"`
}

// Defaults applied by New to zero-valued fields of Config.
const (
	DefaultEmbeddedListen = "127.0.0.1:1883"
	DefaultKeepAlive      = 30 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultQueueSize      = 1000
	DefaultOutboxMaxBytes = 64 << 20
	DefaultStatsInterval  = 30 * time.Second
)

// DefaultConfig returns the configuration used when the [mqtt] table is
// absent: the embedded broker, detections at QoS 1, not retained. Decode the
// TOML table over it so that keys left out keep these values (QoS in
// particular: its zero value 0 is a valid choice, so New cannot tell "unset"
// from "0").
func DefaultConfig() Config {
	return Config{
		Broker:         "embedded",
		EmbeddedListen: DefaultEmbeddedListen,
		KeepAlive:      DefaultKeepAlive,
		ConnectTimeout: DefaultConnectTimeout,
		QoS:            1,
		QueueSize:      DefaultQueueSize,
		OutboxMaxBytes: DefaultOutboxMaxBytes,
		StatsInterval:  DefaultStatsInterval,
	}
}

// withDefaults fills the zero-valued fields (except QoS and Retain, whose
// zero values are meaningful) from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Broker == "" {
		c.Broker = d.Broker
	}
	if c.EmbeddedListen == "" {
		c.EmbeddedListen = d.EmbeddedListen
	}
	if c.KeepAlive <= 0 {
		c.KeepAlive = d.KeepAlive
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = d.ConnectTimeout
	}
	if c.QueueSize <= 0 {
		c.QueueSize = d.QueueSize
	}
	if c.OutboxMaxBytes <= 0 {
		c.OutboxMaxBytes = d.OutboxMaxBytes
	}
	if c.StatsInterval <= 0 {
		c.StatsInterval = d.StatsInterval
	}
	return c
}
