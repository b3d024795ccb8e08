// Package agent is the yolo7d service: it loads the configuration, builds one
// pipeline per camera (capture -> infer -> publish), handles commands, runs
// under kardianos/service with sd_notify keep-alives, and reloads on SIGHUP.
package agent

import (
	"time"

	"github.com/yolo7d/yolo7d/capture"
	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/publish"
)

// Config is the whole configuration file.
type Config struct {
	Agent     Settings         `toml:"agent"`
	Detector  infer.Options    `toml:"detector"`
	MQTT      publish.Config   `toml:"mqtt"`
	Snapshots SnapshotSettings `toml:"snapshots"`
	Cameras   []capture.Config `toml:"camera"`
}

// Settings is the TOML table [agent].
type Settings struct {
	DeviceID  string `toml:"device_id"`  // default: the host name, sanitised to [a-z0-9_-]
	StateDir  string `toml:"state_dir"`  // default /var/lib/yolo7d (systemd StateDirectory), relative paths are relative to the config file
	LogLevel  string `toml:"log_level"`  // debug | info | warn | error (default info)
	LogFormat string `toml:"log_format"` // text | json (default text)
}

// SnapshotSettings is the TOML table [snapshots].
type SnapshotSettings struct {
	OnDetection bool          `toml:"on_detection"` // publish a snapshot when a frame has detections
	MinInterval time.Duration `toml:"min_interval"` // at most one automatic snapshot per camera per interval (default 10s)
	Quality     int           `toml:"quality"`      // JPEG quality 1..100 (default 85)
}
