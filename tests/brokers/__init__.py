"""Tests that talk to real brokers (NATS with JetStream, RabbitMQ) on loopback."""
