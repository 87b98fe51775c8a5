# expect: output_rejected reason~="the worker broke the protocol: unexpected message WorkerEvent { event: Some(Ready("
# must-not: confuse the supervisor's worker state machine by sending `ready` again in the middle of a job
import os
import socket

from pyclave_worker import wire, worker_pb2


def main():
    channel = socket.socket(fileno=fd_linking_to("socket:"))
    wire.send_frame(channel, worker_pb2.WorkerEvent(ready=worker_pb2.WorkerReady()).SerializeToString())
    os._exit(0)
