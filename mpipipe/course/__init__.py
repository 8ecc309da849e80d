"""The course grader's parts, used by `mpipipe grade` (grade.py) and by pytest (pytest_plugin.py).

    base.py                 results, loading a student's file, calling it safely, the time limit
    steps.py                an exercise as steps, and grade_steps: the one grading loop
    course.py               the exercises and their steps; grading a folder; the score table
    schedule_checks.py      checks of exercises 1-5 (schedules, bubble, colours, partition)
    send_recv.py            exercise 6, Send/Recv through a watched communicator
    under_mpi.py            grading on several MPI ranks that agree after every step
    recompute_checks.py     exercise 7, recomputation
    interleaved_checks.py   exercise 8, the interleaved placement and warm-up
    zero_bubble_checks.py   exercise 9, ZB-H1's weight gradients
    tensor_checks.py        exercise 10, f and g in a tensor-parallel MLP (ranks as threads)
    golf_checks.py          exercise 11, schedule golf: a schedule of your own, scored
    pytest_plugin.py        a test per step under pytest, points in the report and JUnit XML
"""
