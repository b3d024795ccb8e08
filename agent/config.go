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
	Finetune  FinetuneSettings `toml:"finetune"`
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

// FinetuneSettings is the TOML table [finetune]: the defaults of an
// on-device fine-tune started by <prefix>/cmd/finetune (the command's own
// fields win) and the promotion gate.
type FinetuneSettings struct {
	Epochs int  `toml:"epochs"` // training epochs, 1..1000 (default 30)
	Img    int  `toml:"img"`    // training input side, a multiple of 32 in 32..1280; 0 = the model's (default 0)
	Batch  int  `toml:"batch"`  // images per batch, 1..256 (default 8)
	Freeze int  `toml:"freeze"` // the first N layers keep their weights, 0..77 (default 0)
	Aux    bool `toml:"aux"`    // train with the auxiliary head (default true)
	// Margin: the candidate is promoted only if its mAP@0.5:0.95 on the val
	// split is at least the current model's plus Margin, in -1..1
	// (default 0.005).
	Margin float64 `toml:"margin"`
	// Replay is an optional data.yaml of the current model's domain whose
	// val split is evaluated too, to catch forgetting (default "": none).
	Replay string `toml:"replay"`
	// MaxReplayDrop is the largest drop of replay mAP@0.5 tolerated for
	// promotion, 0..1 (default 0.02).
	MaxReplayDrop float64 `toml:"max_replay_drop"`
	// ReplayMix is the fraction, in [0, 0.9), of the training images drawn
	// from the replay dataset's train split (rehearsal against forgetting;
	// default 0: none). It needs Replay.
	ReplayMix float64 `toml:"replay_mix"`
	BN        string  `toml:"bn"`      // BatchNorm while training: frozen | batch (default frozen)
	Threads   int     `toml:"threads"` // CPU threads of the training (default: all cores but one, at least 1)
	// Device runs the training steps: cpu, cudnn (the GPU through cuDNN,
	// with [detector] gpu_lib_dir and gpu_device) or auto (cudnn where it
	// loads, else cpu); default cpu.
	Device string `toml:"device"`
	// Mode is share (detection keeps running beside the training) or pause
	// (the cameras' detection pauses while the training runs); default share.
	Mode string `toml:"mode"`
	Seed uint64 `toml:"seed"` // random seed of the run (default 0)
	// Strict makes a bad label line or image of the dataset fail the run
	// (default false: such lines and images are skipped, and listed with
	// file and line in the result).
	Strict bool `toml:"strict"`
}
