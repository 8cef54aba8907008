package main

import (
	"maps"
	"testing"

	"github.com/spf13/cobra"
)

func TestParseReplication(t *testing.T) {
	got, err := parseReplication([]string{"eu-west=3", "us-east=2"})
	if err != nil || !maps.Equal(got, map[string]int{"eu-west": 3, "us-east": 2}) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range [][]string{{"eu"}, {"eu=0"}, {"=3"}, {"eu=x"}, {"eu=1", "eu=2"}} {
		if _, err := parseReplication(bad); err == nil {
			t.Errorf("parseReplication(%q) accepted", bad)
		}
	}
	if got, err := parseReplication(nil); got != nil || err != nil {
		t.Fatalf("empty: %v %v", got, err)
	}
}

func TestFlagsFromEnv(t *testing.T) {
	var brokers []string
	var region string
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	cmd.Flags().StringSliceVar(&brokers, "kafka-brokers", nil, "")
	cmd.Flags().StringVar(&region, "region", "local", "")
	t.Setenv("PARLEY_KAFKA_BROKERS", "a:1,b:2")
	t.Setenv("PARLEY_REGION", "eu")
	if err := cmd.Flags().Parse([]string{"--region", "us"}); err != nil {
		t.Fatal(err)
	}
	if err := flagsFromEnv(cmd); err != nil {
		t.Fatal(err)
	}
	if len(brokers) != 2 || brokers[1] != "b:2" {
		t.Fatalf("brokers %v", brokers)
	}
	if region != "us" {
		t.Fatalf("region %q: the command line must win over the environment", region)
	}
}
