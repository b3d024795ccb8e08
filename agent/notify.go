package agent

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier tells systemd about the agent's state through sd_notify(3):
// readiness, reloads, shutdown, a status line, and watchdog keep-alives.
// Without NOTIFY_SOCKET (not started by systemd, or Type= is not notify)
// every method is a no-op. Failures to send are logged, never returned: the
// agent works the same with or without systemd.
type Notifier struct {
	log *slog.Logger
}

// NewNotifier returns a Notifier that logs send failures to log (nil: no
// logging).
func NewNotifier(log *slog.Logger) *Notifier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Notifier{log: log}
}

// Enabled reports whether systemd listens (NOTIFY_SOCKET is set).
func (n *Notifier) Enabled() bool { return os.Getenv("NOTIFY_SOCKET") != "" }

// send writes one notification; it reports whether it was delivered.
func (n *Notifier) send(state string) bool {
	sent, err := daemon.SdNotify(false, state)
	if err != nil {
		n.log.Warn("sd_notify failed", "state", firstLine(state), "err", err)
		return false
	}
	return sent
}

// Ready reports that start-up (or a reload) is complete: READY=1.
func (n *Notifier) Ready() { n.send(daemon.SdNotifyReady) }

// Stopping reports that the agent is shutting down: STOPPING=1.
func (n *Notifier) Stopping() { n.send(daemon.SdNotifyStopping) }

// Reloading reports that the configuration is being reloaded; Ready must
// follow when the reload is done. The monotonic timestamp is what
// Type=notify-reload (systemd 253+) requires; older versions ignore it.
func (n *Notifier) Reloading() {
	n.send(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec())
}

// Status sets the free-form status line shown by `systemctl status`
// (newlines are replaced by spaces).
func (n *Notifier) Status(s string) {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
	n.send("STATUS=" + s)
}

// ExtendTimeout asks systemd for d more time to finish the current start-up,
// reload or shutdown (EXTEND_TIMEOUT_USEC), e.g. while a TensorRT engine is
// being built.
func (n *Notifier) ExtendTimeout(d time.Duration) {
	if d <= 0 {
		return
	}
	n.send(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", d.Microseconds()))
}

// RunWatchdog sends WATCHDOG=1 every half of the interval systemd set
// (WATCHDOG_USEC, for this process per WATCHDOG_PID), but only while healthy
// returns true, so that systemd kills and restarts a wedged agent. It returns
// when ctx is done, or at once when the watchdog is not enabled. healthy is
// called from RunWatchdog's goroutine once per period; nil means always
// healthy.
func (n *Notifier) RunWatchdog(ctx context.Context, healthy func() bool) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("systemd watchdog: bad environment, watchdog not served", "err", err)
		return
	}
	if interval <= 0 || !n.Enabled() {
		return
	}
	if healthy == nil {
		healthy = func() bool { return true }
	}
	period := interval / 2
	n.log.Debug("systemd watchdog enabled", "interval", interval, "period", period)
	t := time.NewTicker(period)
	defer t.Stop()
	wasHealthy := true
	for {
		ok := healthy()
		switch {
		case ok:
			if !wasHealthy {
				n.log.Info("systemd watchdog: healthy again, resuming keep-alives")
			}
			n.send(daemon.SdNotifyWatchdog)
		case wasHealthy:
			n.log.Error("systemd watchdog: agent unhealthy, withholding keep-alives (systemd restarts the service if this lasts)",
				"watchdog", interval)
			n.Status("unhealthy: watchdog keep-alives withheld")
		}
		wasHealthy = ok
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
