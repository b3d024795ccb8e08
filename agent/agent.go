package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"time"

	"github.com/yolo7d/yolo7d/capture"
	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/publish"
)

// Options configure an Agent.
type Options struct {
	// ConfigPath is the TOML file; it is read again on Reload.
	ConfigPath string
	// LogOutput receives the structured log (default os.Stderr).
	LogOutput io.Writer
	// Logger, when set, replaces the logger built from [agent].
	Logger *slog.Logger
	// Version is the agent's version, shown in Home Assistant.
	Version string
}

// Agent is the running service: the shared engine, one pipeline per enabled
// camera, the publisher, and optionally the embedded broker.
type Agent struct {
	opts     Options
	cfg      *Config
	log      *slog.Logger
	deviceID string
	started  time.Time

	engine engineSlot
	pub    *publish.Publisher
	topics publish.Topics
	notify *Notifier
	ft     finetuner // on-device fine-tuning (finetune.go)

	mu       sync.Mutex // guards pipes and cfg swaps during reload
	pipes    map[string]*pipeline
	runCtx   context.Context
	reloadCh chan chan error
}

// New loads the configuration and prepares an agent; Run starts it.
func New(opts Options) (*Agent, error) {
	cfg, warnings, err := LoadWithWarnings(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stderr
	}
	log := opts.Logger
	if log == nil {
		if log, err = NewLogger(opts.LogOutput, cfg.Agent); err != nil {
			return nil, err
		}
	}
	for _, w := range warnings {
		log.Warn("configuration", "warning", w)
	}
	return &Agent{
		opts:     opts,
		cfg:      cfg,
		log:      log,
		deviceID: cfg.Agent.DeviceID,
		pipes:    make(map[string]*pipeline),
		reloadCh: make(chan chan error),
		notify:   NewNotifier(log),
	}, nil
}

// Config returns the configuration in effect.
func (a *Agent) Config() *Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// Run starts everything and blocks until ctx is cancelled, then shuts down
// gracefully: cameras stopped, "offline" published, the outbox flushed.
func (a *Agent) Run(ctx context.Context) (err error) {
	a.started = time.Now()
	cfg := a.cfg
	if err := os.MkdirAll(cfg.Agent.StateDir, 0o750); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	a.log.Info("starting yolo7d", "device", a.deviceID, "config", a.opts.ConfigPath, "state_dir", cfg.Agent.StateDir)

	mqttCfg := cfg.MQTT

	eng, err := infer.Open(ctx, cfg.Detector)
	if err != nil {
		return fmt.Errorf("model: %w", err)
	}
	_ = a.engine.Swap(eng)
	defer a.engine.Close()
	info := eng.Info()
	a.log.Info("model loaded", "path", info.Path, "backend", info.Backend, "input", info.InputSize,
		"classes", len(info.Classes), "sha256", info.SHA256)
	logBackend(a.log, info)

	a.pub, err = publish.New(mqttCfg, publish.Options{
		Logger:    a.log,
		DeviceID:  a.deviceID,
		DataDir:   filepath.Join(cfg.Agent.StateDir, "data"),
		OnCommand: a.handleCommand,
	})
	if err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	a.topics = a.pub.Topics()
	if err := a.pub.Start(ctx); err != nil {
		return fmt.Errorf("mqtt: %w", err)
	}
	a.log.Info("publishing", "broker", mqttCfg.Broker, "prefix", a.topics.Prefix())

	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a.mu.Lock()
	a.runCtx = runCtx
	for _, c := range cfg.Cameras {
		if !c.Enabled {
			a.log.Info("camera disabled", "camera", c.Name)
			continue
		}
		if err := a.startPipeline(c); err != nil {
			a.mu.Unlock()
			a.stopAll()
			_ = a.closePublisher()
			return err
		}
	}
	names := a.cameraNames()
	a.mu.Unlock()
	if err := a.pub.PublishDiscovery(a.opts.Version, names); err != nil {
		a.log.Warn("home assistant discovery", "err", err)
	}

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.statsLoop(runCtx) }()
	go func() { defer wg.Done(); a.notify.RunWatchdog(runCtx, a.healthy) }()
	a.notify.Ready()
	a.notify.Status(fmt.Sprintf("running: %d camera(s), model %s", len(a.pipes), shortHash(info.SHA256)))

	for {
		select {
		case <-ctx.Done():
			a.log.Info("shutting down")
			a.notify.Stopping()
			a.stopFinetune()
			a.stopAll()
			cancel()
			wg.Wait()
			return a.closePublisher()
		case reply := <-a.reloadCh:
			reply <- a.reload(runCtx)
		}
	}
}

func (a *Agent) closePublisher() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.pub.Close(ctx); err != nil {
		return fmt.Errorf("mqtt close: %w", err)
	}
	return nil
}

// startPipeline starts one camera; a.mu must be held.
func (a *Agent) startPipeline(c capture.Config) error {
	p, err := newPipeline(a, c)
	if err != nil {
		return fmt.Errorf("camera %s: %w", c.Name, err)
	}
	p.start(a.runCtx)
	a.pipes[c.Name] = p
	a.log.Info("camera started", "camera", c.Name, "uri", c.URI, "max_fps", c.MaxFPS)
	return nil
}

// stopAll stops every pipeline and publishes their final state.
func (a *Agent) stopAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, p := range a.pipes {
		p.stop()
		delete(a.pipes, name)
	}
}

// Reload re-reads the configuration file and applies it without a restart:
// cameras added, removed or changed are started, stopped or restarted;
// detector settings (thresholds, classes, model) are applied by loading a new
// engine and swapping it in. A configuration that does not load, or a model
// that does not open, leaves everything as it was. MQTT settings need a
// restart (a warning says so).
func (a *Agent) Reload(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case a.reloadCh <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *Agent) reload(ctx context.Context) error {
	a.notify.Reloading()
	defer a.notify.Ready()
	next, err := Load(a.opts.ConfigPath)
	if err != nil {
		a.log.Error("reload: configuration rejected, keeping the current one", "err", err)
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	old := a.cfg
	if !reflect.DeepEqual(old.Detector, next.Detector) {
		eng, err := infer.Open(ctx, next.Detector)
		if err != nil {
			a.log.Error("reload: model does not open, keeping the current engine", "err", err)
			return fmt.Errorf("reload: %w", err)
		}
		_ = a.engine.Swap(eng)
		a.log.Info("reload: detector updated", "model", next.Detector.Model, "sha256", eng.Info().SHA256)
		logBackend(a.log, eng.Info())
	}
	if !reflect.DeepEqual(old.MQTT, next.MQTT) || old.Agent.StateDir != next.Agent.StateDir || old.Agent.DeviceID != next.Agent.DeviceID {
		a.log.Warn("reload: [mqtt] and [agent] device_id/state_dir changes take effect after a restart")
		next.MQTT, next.Agent.StateDir, next.Agent.DeviceID = old.MQTT, old.Agent.StateDir, old.Agent.DeviceID
	}
	want := make(map[string]capture.Config)
	for _, c := range next.Cameras {
		if c.Enabled {
			want[c.Name] = c
		}
	}
	var errs []error
	var gone []string
	for name := range a.pipes {
		if _, ok := want[name]; !ok {
			gone = append(gone, name)
		}
	}
	for name, p := range a.pipes {
		if c, ok := want[name]; !ok || !reflect.DeepEqual(c, p.cfg) {
			p.stop()
			delete(a.pipes, name)
			a.log.Info("reload: camera stopped", "camera", name)
		}
	}
	for name, c := range want {
		if _, running := a.pipes[name]; running {
			continue
		}
		if err := a.startPipeline(c); err != nil {
			errs = append(errs, err)
		}
	}
	a.cfg = next
	if err := a.pub.ClearDiscovery(gone); err != nil {
		a.log.Warn("home assistant discovery", "err", err)
	}
	if err := a.pub.PublishDiscovery(a.opts.Version, a.cameraNames()); err != nil {
		a.log.Warn("home assistant discovery", "err", err)
	}
	a.log.Info("reload: done", "cameras", len(a.pipes))
	return errors.Join(errs...)
}

// healthy is false when a Detect call has hung for a minute: the systemd
// watchdog then restarts the agent.
func (a *Agent) healthy() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, p := range a.pipes {
		if p.wedged(time.Minute) {
			return false
		}
	}
	return true
}

func (a *Agent) statsLoop(ctx context.Context) {
	interval := a.cfg.MQTT.StatsInterval
	if interval <= 0 {
		interval = 30 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.publishStats()
		}
	}
}

// stats assembles the stats payload.
func (a *Agent) stats() *publish.StatsPayload {
	info := a.engine.Info()
	s := &publish.StatsPayload{
		Device:        a.deviceID,
		UptimeS:       time.Since(a.started).Seconds(),
		Model:         info.SHA256,
		Backend:       info.Backend,
		BackendNote:   info.BackendNote,
		BackendDevice: info.Device,
		Cameras:       make(map[string]publish.CameraStats),
	}
	a.mu.Lock()
	for name, p := range a.pipes {
		s.Cameras[name] = p.cameraStats()
	}
	a.mu.Unlock()
	return s
}

// cameraNames lists the running cameras, sorted; a.mu must be held.
func (a *Agent) cameraNames() []string {
	names := make([]string, 0, len(a.pipes))
	for name := range a.pipes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// logBackend logs the GPU an engine runs on and, when "auto" passed over
// a backend (no GPU, libraries missing, TensorRT not built in), why.
func logBackend(log *slog.Logger, info infer.ModelInfo) {
	if info.Device != "" {
		log.Info("inference device", "backend", info.Backend, "device", info.Device)
	}
	if info.BackendNote != "" {
		log.Info("backend selection", "backend", info.Backend, "why", info.BackendNote)
	}
}
