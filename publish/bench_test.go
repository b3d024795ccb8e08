package publish

import (
	"context"
	"testing"
	"time"
)

// BenchmarkPublisherThroughput measures how fast the publisher moves
// detections messages to a loopback mosquitto: from the first PublishJSON to
// the last message sent (QoS 0) or acknowledged by the broker (QoS 1).
func BenchmarkPublisherThroughput(b *testing.B) {
	m := newMosquitto(b, true)
	for _, qos := range []byte{0, 1} {
		b.Run(map[byte]string{0: "QoS0", 1: "QoS1"}[qos], func(b *testing.B) {
			cfg := testConfig(b, m.URL())
			cfg.QoS = qos
			cfg.QueueSize = b.N + 1
			cfg.OutboxMaxBytes = 1 << 30
			p, err := New(cfg, Options{DeviceID: "bench", Logger: discardLogger()})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close(context.Background())
			must(b, p.Start(context.Background()))
			waitFor(b, 10*time.Second, "connection", p.Connected)
			d := DetectionsPayload{Camera: "cam0", Frame: 1, Width: 1920, Height: 1080,
				Model: "3f1c0e6a0bd4c2e5d0c1f6a1a7e8b2c9d4e5f60718293a4b5c6d7e8f90a1b2c3", InferMS: 7.25,
				Detections: []Detection{
					{Class: "person", ClassID: 0, Score: 0.91, Box: Box{100, 200, 300, 600}, BoxNorm: [4]float32{0.1, 0.37, 0.1, 0.37}},
					{Class: "car", ClassID: 2, Score: 0.77, Box: Box{800, 500, 1200, 800}, BoxNorm: [4]float32{0.52, 0.6, 0.2, 0.27}},
				}}
			sent0 := p.Stats().Sent
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				d.Frame = uint64(i)
				if err := p.PublishDetections(&d); err != nil {
					b.Fatal(err)
				}
			}
			waitFor(b, 5*time.Minute, "all sent", func() bool { return p.Stats().Sent-sent0 >= uint64(b.N) })
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
			if st := p.Stats(); st.DroppedQoS0+st.DroppedQoS1 > 0 {
				b.Fatalf("dropped: %+v", st)
			}
		})
	}
}
