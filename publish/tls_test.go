package publish

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key to
// dir and returns their paths.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "yolo7d test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	kb, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	must(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	must(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600))
	return certFile, keyFile
}

func TestNewRefusesBadTLSAndPasswordFilesNamingThem(t *testing.T) {
	dir := t.TempDir()
	cert, key := selfSigned(t, dir)
	junk := filepath.Join(dir, "junk.pem")
	must(t, os.WriteFile(junk, []byte("not a certificate"), 0o600))
	missing := filepath.Join(dir, "missing.pem")
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"missing CA", func(c *Config) { c.CAFile = missing }, "mqtt.ca_file"},
		{"CA without PEM", func(c *Config) { c.CAFile = junk }, "junk.pem"},
		{"cert without key", func(c *Config) { c.CertFile = cert }, "mqtt.key_file"},
		{"key without cert", func(c *Config) { c.KeyFile = key }, "mqtt.cert_file"},
		{"missing key", func(c *Config) { c.CertFile, c.KeyFile = cert, missing }, "missing.pem"},
		{"bad key", func(c *Config) { c.CertFile, c.KeyFile = cert, junk }, "junk.pem"},
		{"TLS with tcp scheme", func(c *Config) { c.Broker = "tcp://127.0.0.1:1883"; c.CAFile = cert }, "not TLS"},
		{"missing password file", func(c *Config) { c.PasswordFile = missing }, "mqtt.password_file"},
		{"bad scheme", func(c *Config) { c.Broker = "http://x" }, "scheme"},
		{"QoS 2", func(c *Config) { c.QoS = 2 }, "mqtt.qos"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "ssl://127.0.0.1:8883")
			tc.edit(&cfg)
			_, err := New(cfg, Options{DeviceID: "d", Logger: discardLogger()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %q", err, tc.want)
			}
		})
	}
}

func TestPublisherConnectsOverTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	must(t, err)
	srv := mochi.New(&mochi.Options{Logger: discardLogger()})
	must(t, srv.AddHook(new(auth.AllowHook), nil))
	l := listeners.NewTCP(listeners.Config{ID: "tls", Address: "127.0.0.1:0",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}}})
	must(t, srv.AddListener(l))
	must(t, srv.Serve())
	t.Cleanup(func() { srv.Close() })

	pwFile := filepath.Join(dir, "password")
	must(t, os.WriteFile(pwFile, []byte("secret\n"), 0o600))
	cfg := testConfig(t, "ssl://"+l.Address())
	cfg.CAFile, cfg.Username, cfg.PasswordFile = certFile, "agent", pwFile
	p := startPublisher(t, cfg, Options{})
	waitFor(t, 10*time.Second, "TLS connection", p.Connected)
}
