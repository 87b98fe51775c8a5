# expect: output_rejected reason="the job reported a table it had no file for"
# must-not: make the supervisor hand out a table for an exec job by forging the worker's result message on its channel
import os
import socket

from pyclave_worker import wire, worker_pb2


def main():
    channel = socket.socket(fileno=fd_linking_to("socket:"))
    forged = worker_pb2.WorkerEvent(result=worker_pb2.JobResult(ok=worker_pb2.JobOk(wrote_table=True)))
    wire.send_frame(channel, forged.SerializeToString())
    os._exit(0)
