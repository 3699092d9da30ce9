# Indexes pickle as in FAISS (through serialize_index): save, load, use.
import pickle
import numpy as np
import faiss

d = 24
rs = np.random.RandomState(7)
xt = rs.rand(2000, d).astype('float32')
xq = rs.rand(10, d).astype('float32')

index = faiss.index_factory(d, "IVF16,SQ8")
index.train(xt)
index.add(xt)
faiss.ParameterSpace().set_index_parameter(index, "nprobe", 4)
data = pickle.dumps(index)
index2 = pickle.loads(data)
print(type(index2).__name__, index2.ntotal, index2.is_trained)
print(faiss.extract_index_ivf(index2).nprobe)
D1, I1 = index.search(xq, 3)
D2, I2 = index2.search(xq, 3)
print((I1 == I2).all(), np.abs(D1 - D2).max())
print(I2)
index2.add(xq)
print(index.ntotal, index2.ntotal)
blob = faiss.serialize_index(index2)
print(blob.dtype, faiss.deserialize_index(blob).ntotal)
