package agent

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/tiny"
)

// promoteLoopEnv makes the test binary a promotion loop (see
// TestPromoteLoopHelper) instead of running the tests.
const promoteLoopEnv = "YOLO7D_PROMOTE_LOOP_DIR"

// TestPromoteLoopHelper is not a test: run by TestPromoteSurvivesKill9 as
// a child process, it promotes the two models of the directory named by
// the environment onto m.onnx in turn, forever, until it is killed.
func TestPromoteLoopHelper(t *testing.T) {
	dir := os.Getenv(promoteLoopEnv)
	if dir == "" {
		t.Skip("helper process of TestPromoteSurvivesKill9")
	}
	model := filepath.Join(dir, "m.onnx")
	srcs := []string{filepath.Join(dir, "a.bin"), filepath.Join(dir, "b.bin")}
	for i := 0; ; i++ {
		data, err := os.ReadFile(srcs[i%2])
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		// The trainer writes its candidate atomically; so does this loop.
		cand := filepath.Join(dir, "candidate.onnx")
		if err := tiny.WriteFileAtomic(cand, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		if err := promoteFiles(model, cand, nil); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("promoted", i)
	}
}

// TestPromoteSurvivesKill9 kills (SIGKILL) a process in the middle of
// promoting models over and over, at different moments, and checks that the
// model path then holds one of the two models, whole, and that the CPU
// engine loads it; <model>.prev, when present, is whole too.
func TestPromoteSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	models := make([][]byte, 2)
	for i, name := range []string{"a.bin", "b.bin"} {
		p := filepath.Join(dir, name)
		if err := tiny.WriteRandomONNX(p, tiny.Config{Act: "relu", NC: 3, Seed: uint64(i + 1)}, 64); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		models[i] = b
	}
	model := filepath.Join(dir, "m.onnx")
	if err := os.WriteFile(model, models[1], 0o644); err != nil {
		t.Fatal(err)
	}
	seen := [2]int{}
	for round := 0; round < 16; round++ {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestPromoteLoopHelper$")
		cmd.Env = append(os.Environ(), promoteLoopEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Let it complete 1 to 4 promotions, then kill it a few
		// milliseconds later: inside some later promotion's steps.
		r := bufio.NewReader(out)
		for k := 0; k <= round%4; k++ {
			line, _ := r.ReadString('\n')
			if !strings.HasPrefix(line, "promoted") {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("round %d: helper said %q", round, line)
			}
		}
		time.Sleep(time.Duration(round*3%11) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()

		seen[wholeModel(t, model, models...)]++
		if b, err := os.ReadFile(prevPath(model)); err == nil && !bytes.Equal(b, models[0]) && !bytes.Equal(b, models[1]) {
			t.Fatalf("round %d: %s holds %d bytes that are neither model", round, prevPath(model), len(b))
		}
		be, err := infer.NewCPUBackendSize(model, 1, 64)
		if err != nil {
			t.Fatalf("round %d: the model left by kill -9 does not load: %v", round, err)
		}
		be.Close()
	}
	t.Logf("after 16 kills the model path held model a %d times and model b %d times, whole each time", seen[0], seen[1])
	if seen[0] == 0 || seen[1] == 0 {
		t.Errorf("every kill left the same model (a %d, b %d): the kills did not land in different promotions", seen[0], seen[1])
	}
}
